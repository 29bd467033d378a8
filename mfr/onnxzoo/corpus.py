"""A corpus of generated uploads, one or more per validator code, with the verdict each must get.

Tests run every case through the library, ``mfr validate`` and the gRPC
service; demos can use it to show rejections. Everything is built from
mfr.onnxzoo's tiny model (milliseconds to run) and stays small on disk: the
compression bombs *declare* gigabytes, they do not contain them.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from mfr.onnxzoo import (
    GraphBuilder,
    build_tiny_model,
    feature_output,
    image_input,
    tiny_trunk,
    tiny_trunk_width,
)

FEATURE_DIM = 128
_TAIL = tiny_trunk_width()

# A track with a tiny size limit, for model_too_large (the tiny model is ~0.4 MB).
SMALL_TRACK_TOML = """
id = "corpus"
title = "validator corpus"
[[tracks]]
id = "S"
max_feature_dim = 512
max_latency_ms = 10.0
max_model_mb = 0.25
"""


@dataclass(frozen=True)
class Case:
    name: str
    filename: str  # "model.onnx" or "model.zip" (what the participant uploads)
    build: Callable[[], bytes]
    errors: tuple[str, ...] = ()  # exact error codes, in report order; () = accepted
    warnings: tuple[str, ...] = ()
    track: str = "A"
    challenge_toml: str | None = None  # None: the built-in challenge
    latency_factor: float = 1000.0  # pinned: only the latency case is meant to be slow
    wall_seconds: float | None = None  # None: the suite's default limits
    memory_gib: float | None = None
    input_mean: float = 127.5

    @property
    def ok(self) -> bool:
        return not self.errors


def write_case(case: Case, root: Path) -> Path:
    folder = root / case.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / case.filename
    path.write_bytes(case.build())
    return path


# --- models -------------------------------------------------------------------


def _bytes(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()


def _head(g: GraphBuilder, x: str, *, feature_dim: int = FEATURE_DIM, fin: int = _TAIL) -> str:
    return g.batch_norm(g.gemm(x, fin, feature_dim), feature_dim, out="features")


def _model(g: GraphBuilder, *, inputs=None, outputs=None, batch: int | str = "None") -> bytes:
    return _bytes(
        g.model(
            inputs or [image_input("input", batch)],
            outputs or [feature_output("features", FEATURE_DIM, batch)],
        )
    )


def _const(g: GraphBuilder, name: str, *values: int) -> str:
    return g.constant(name, np.array(values, np.int64))


def valid(**kwargs) -> Callable[[], bytes]:
    return lambda: _bytes(build_tiny_model(**kwargs))


def two_outputs() -> bytes:
    g = GraphBuilder(0)
    tail = tiny_trunk(g, "input")
    _head(g, tail)
    return _model(g, outputs=[
        feature_output("features", FEATURE_DIM),
        helper.make_tensor_value_info(tail, TensorProto.FLOAT, ["None", _TAIL]),
    ])  # fmt: skip


def two_inputs() -> bytes:
    g = GraphBuilder(0)
    _head(g, g.node("Mul", [tiny_trunk(g, "input"), "scale"]))
    return _model(g, inputs=[
        image_input("input"), helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1])
    ])  # fmt: skip


def rank3_input() -> bytes:
    g = GraphBuilder(0)
    x = g.node("Reshape", ["input", _const(g, "shape", 0, 3, 112, 112)])
    _head(g, tiny_trunk(g, x))
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["None", 3, 112 * 112])
    return _model(g, inputs=[inp])


def input_96() -> bytes:
    g = GraphBuilder(0)
    _head(g, tiny_trunk(g, "input"), fin=tiny_trunk_width(side=96))
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["None", 3, 96, 96])
    return _model(g, inputs=[inp])


def double_input() -> bytes:
    g = GraphBuilder(0)
    _head(g, tiny_trunk(g, g.node("Cast", ["input"], to=TensorProto.FLOAT)))
    inp = helper.make_tensor_value_info("input", TensorProto.DOUBLE, ["None", 3, 112, 112])
    return _model(g, inputs=[inp])


def three_nodes(*, fp16: bool = False, feature_dim: int = FEATURE_DIM) -> Callable[[], bytes]:
    """Conv8x8/8 -> Flatten -> Gemm (+ a Cast when the conv weight is float16)."""

    def build() -> bytes:
        g = GraphBuilder(0)
        weight = (g.rng.standard_normal((4, 3, 8, 8)) * 0.05).astype(np.float32)
        if fp16:
            w16 = g.constant("conv.weight", weight.astype(np.float16))
            w = g.node("Cast", [w16], to=TensorProto.FLOAT)
        else:
            w = g.constant("conv.weight", weight)
        x = g.node("Conv", ["input", w], kernel_shape=[8, 8], strides=[8, 8])
        x = g.node("Flatten", [x], axis=1)
        fc = g.he_normal("fc.weight", (feature_dim, 4 * 14 * 14), 784)
        g.node("Gemm", [x, fc, g.small("fc.bias", (feature_dim,))], transB=1, out="features")
        return _bytes(g.model([image_input("input")], [feature_output("features", feature_dim)]))

    return build


def fp16_weights() -> bytes:
    g = GraphBuilder(0)
    tail = tiny_trunk(g, "input")
    w16 = (g.rng.standard_normal((FEATURE_DIM, _TAIL)) * 0.03).astype(np.float16)
    w = g.node("Cast", [g.constant("fc.weight.fp16", w16)], to=TensorProto.FLOAT)
    y = g.node("Gemm", [tail, w, g.small("fc.bias", (FEATURE_DIM,))], transB=1)
    g.batch_norm(y, FEATURE_DIM, out="features")
    return _model(g)


def int8_weights() -> bytes:
    g = GraphBuilder(0)
    tail = tiny_trunk(g, "input")
    q = g.constant("fc.weight.q", g.rng.integers(-100, 100, (FEATURE_DIM, _TAIL), dtype=np.int8))
    scale = g.constant("fc.weight.scale", np.array(0.001, np.float32))
    zero = g.constant("fc.weight.zero", np.array(0, np.int8))
    w = g.node("DequantizeLinear", [q, scale, zero])
    y = g.node("Gemm", [tail, w, g.small("fc.bias", (FEATURE_DIM,))], transB=1)
    g.batch_norm(y, FEATURE_DIM, out="features")
    return _model(g)


def with_tail(op: str, domain: str = "") -> Callable[[], bytes]:
    """The tiny model with one more node between its trunk and head."""

    def build() -> bytes:
        g = GraphBuilder(0)
        _head(g, g.node(op, [tiny_trunk(g, "input")], domain=domain))
        model = g.model([image_input("input")], [feature_output("features", FEATURE_DIM)])
        if domain:
            model.opset_import.append(helper.make_opsetid(domain, 1))
        return _bytes(model)

    return build


def external_data() -> bytes:
    model = build_tiny_model()
    # Point the first convolution's weight at a server file: must never be read.
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "/etc/passwd"), ("offset", "0"), ("length", "384")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    return _bytes(model)


def non_finite() -> bytes:
    g = GraphBuilder(0)
    y = g.gemm(tiny_trunk(g, "input"), _TAIL, FEATURE_DIM)
    g.node("Mul", [y, g.constant("poison", np.array([np.inf], np.float32))], out="features")
    return _model(g)


def feature_4d() -> bytes:
    g = GraphBuilder(0)
    x = g.conv("input", 3, 8, 4, 4)
    x = g.prelu(g.batch_norm(x, 8), 8)
    x = g.conv(x, 8, 16, 4, 4)
    x = g.prelu(g.batch_norm(x, 16), 16)
    g.node("Identity", [g.node("Relu", [x])], out="features")
    out = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["None", 16, 7, 7])
    return _model(g, outputs=[out])


def feature_1d() -> bytes:
    g = GraphBuilder(0)
    y = g.batch_norm(g.gemm(tiny_trunk(g, "input"), _TAIL, FEATURE_DIM), FEATURE_DIM)
    g.node("Reshape", [y, _const(g, "flat", -1)], out="features")
    out = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n"])
    return _model(g, outputs=[out])


def flip_test() -> bytes:
    """A built-in flip test: [x; mirror(x)] through the network, halves added."""
    g = GraphBuilder(0)
    mirror = g.node("Slice", [
        "input", _const(g, "starts", -1), _const(g, "ends", -(2**62)),
        _const(g, "axes", 3), _const(g, "steps", -1),
    ])  # fmt: skip
    both = g.node("Concat", ["input", mirror], axis=0)
    y = g.gemm(tiny_trunk(g, both), _TAIL, FEATURE_DIM)
    first, second = g.node("Split", [y], outputs=2, axis=0)
    g.batch_norm(g.node("Add", [first, second]), FEATURE_DIM, out="features")
    return _model(g)


def batch_mean() -> bytes:
    """Adds the batch's mean feature to every feature: caught statically and dynamically."""
    g = GraphBuilder(0)
    y = g.gemm(tiny_trunk(g, "input"), _TAIL, FEATURE_DIM)
    mean = g.node("ReduceMean", [y], axes=[0], keepdims=1)
    g.node("Add", [y, mean], out="features")
    return _model(g)


def hidden_leak() -> bytes:
    """Leaks a statistic of the whole batch through a flattening Reshape, which the
    static analysis cannot follow: only the batch-consistency test sees it."""
    g = GraphBuilder(0)
    flat = g.node("Reshape", ["input", _const(g, "flat", -1)])
    total = g.node("ReduceSum", [g.node("Abs", [flat])], keepdims=0)
    leak = g.node("Mul", [total, g.constant("k", np.array(1e-5, np.float32))])
    _head(g, tiny_trunk(g, g.node("Add", ["input", leak])))
    return _model(g)


def fixed_reshape() -> bytes:
    """Batch fixed at 1 *inside* the graph: making the input dynamic is not enough."""
    g = GraphBuilder(0)
    y = g.node("Reshape", [tiny_trunk(g, "input"), _const(g, "shape", 1, _TAIL)])
    _head(g, y)
    return _model(g, batch=1)


def hang() -> bytes:
    """A Loop whose trip count comes from the input's shape: runs for ever at run time."""
    g = GraphBuilder(0)
    n = g.node("Gather", [g.node("Shape", ["input"]), g.constant("zero", np.array(0, np.int64))])
    trips = g.node("Mul", [n, g.constant("many", np.array(10**15, np.int64))])
    keep_going = g.node("Constant", [], value=helper.make_tensor("t", TensorProto.BOOL, [], [True]))
    start = g.node("Constant", [], value=helper.make_tensor("v", TensorProto.FLOAT, [], [0.0]))
    scalar = [helper.make_tensor_value_info(n, t, []) for n, t in (
        ("i", TensorProto.INT64), ("cond_in", TensorProto.BOOL), ("v_in", TensorProto.FLOAT),
        ("cond_out", TensorProto.BOOL), ("v_out", TensorProto.FLOAT))]  # fmt: skip
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["v_in", "one"], ["v_out"]),
        ],
        "body", scalar[:3], scalar[3:],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )  # fmt: skip
    count = g.node("Loop", [trips, keep_going, start], body=body)
    nothing = g.node("Mul", [count, g.constant("nothing", np.array(0.0, np.float32))])
    _head(g, tiny_trunk(g, g.node("Add", ["input", nothing])))
    return _model(g)


def memory_hog() -> bytes:
    """Allocates batch x 2.4 GB at run time: more than the corpus's 1.5 GB limit, less
    than the machine has, so only the validator's memory limit stops it."""
    g = GraphBuilder(0)
    blowup = _const(g, "blowup", 1, 125, 128, 1)
    big = g.node("ConstantOfShape", [g.node("Mul", [g.node("Shape", ["input"]), blowup])])
    peak = g.node("ReduceMax", [big], keepdims=0)
    _head(g, tiny_trunk(g, g.node("Add", ["input", peak])))
    return _model(g)


def not_onnx() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


# --- zips ---------------------------------------------------------------------


def zipped(members: dict[str, bytes | Callable[[], bytes]], *,
           symlinks: tuple[str, ...] = ()) -> Callable[[], bytes]:  # fmt: skip
    def build() -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, content in members.items():
                data = content() if callable(content) else content
                info = zipfile.ZipInfo(name, date_time=(2021, 6, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                if name in symlinks:
                    info.external_attr = (0o120777 << 16)
                    info.create_system = 3
                else:
                    info.external_attr = (0o100644 << 16)
                archive.writestr(info, data)
        return buffer.getvalue()

    return build


def declared_bomb() -> bytes:
    """A zip whose model.onnx *declares* 4 GB uncompressed (central directory patched)."""
    data = bytearray(zipped({"model.onnx": valid()})())
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 0xFFFFFFF0)
    return bytes(data)


def corrupt_member() -> bytes:
    """A readable archive whose deflate stream is damaged: extraction fails its CRC."""
    data = bytearray(zipped({"model.onnx": valid()})())
    start = 30 + len("model.onnx")  # local header + name: deflate data follows
    for i in range(start + 200, start + 260):
        data[i] ^= 0x5A
    return bytes(data)


def truncated_zip() -> bytes:
    data = zipped({"model.onnx": valid()})()
    return data[: len(data) // 2]


def readme() -> bytes:
    return b"our team's submission\n"


# --- the corpus -----------------------------------------------------------------

CASES: list[Case] = [
    # accepted
    Case("valid_dynamic", "model.onnx", valid()),
    Case("valid_fixed_batch", "model.onnx", valid(batch=1), warnings=("fixed_batch",)),
    Case("valid_self_normalising", "model.onnx", valid(normalise_inside=True), input_mean=0.0),
    Case("valid_zip", "model.zip", zipped({"model.onnx": valid()})),
    Case("valid_zip_extra_files", "model.zip",
         zipped({"model.onnx": valid(), "README.txt": readme, "__MACOSX/._model.onnx": b"x"}),
         warnings=("extra_files",)),
    Case("valid_track_b_1024", "model.onnx", valid(feature_dim=1024), track="B"),
    # zip safety
    Case("zip_invalid_garbage", "model.zip", not_onnx, errors=("zip_invalid",)),
    Case("zip_invalid_truncated", "model.zip", truncated_zip, errors=("zip_invalid",)),
    Case("zip_invalid_corrupt_member", "model.zip", corrupt_member, errors=("zip_invalid",)),
    Case("zip_unsafe_traversal", "model.zip", zipped({"../model.onnx": valid()}),
         errors=("zip_unsafe",)),
    Case("zip_unsafe_absolute", "model.zip", zipped({"/tmp/model.onnx": valid()}),
         errors=("zip_unsafe",)),
    Case("zip_unsafe_symlink", "model.zip",
         zipped({"model.onnx": b"/etc/passwd"}, symlinks=("model.onnx",)), errors=("zip_unsafe",)),
    Case("zip_unsafe_ratio_bomb", "model.zip",
         zipped({"model.onnx": valid(), "padding.bin": bytes(20 * 1024 * 1024)}),
         errors=("zip_unsafe",)),
    Case("zip_unsafe_declared_bomb", "model.zip", declared_bomb, errors=("zip_unsafe",)),
    Case("zip_no_model", "model.zip", zipped({"README.txt": readme}), errors=("zip_no_model",)),
    Case("zip_no_model_nested", "model.zip", zipped({"submission/model.onnx": valid()}),
         errors=("zip_no_model",)),
    Case("zip_multiple_models", "model.zip",
         zipped({"a.onnx": valid(), "b.onnx": valid(seed=1)}), errors=("zip_multiple_models",)),
    # size
    Case("model_too_large", "model.onnx", valid(), errors=("model_too_large",), track="S",
         challenge_toml=SMALL_TRACK_TOML),
    Case("model_too_large_zip", "model.zip", zipped({"model.onnx": valid()}),
         errors=("model_too_large",), track="S", challenge_toml=SMALL_TRACK_TOML),
    # refused before onnxruntime sees them
    Case("external_data", "model.onnx", external_data, errors=("external_data",)),
    Case("custom_domain", "model.onnx", with_tail("Flip", "com.example"),
         errors=("custom_domain",)),
    # load
    Case("load_failed_not_onnx", "model.onnx", not_onnx, errors=("load_failed",)),
    Case("load_failed_unknown_op", "model.onnx", with_tail("NoSuchOperator"),
         errors=("load_failed",)),
    # interface
    Case("input_count", "model.onnx", two_inputs, errors=("input_count",)),
    Case("input_rank", "model.onnx", rank3_input, errors=("input_rank",)),
    Case("output_count", "model.onnx", two_outputs, errors=("output_count",)),
    Case("graph_too_small", "model.onnx", three_nodes(), errors=("graph_too_small",)),
    Case("input_size", "model.onnx", input_96, errors=("input_size",)),
    Case("input_type", "model.onnx", double_input, errors=("input_type",)),
    # weights
    Case("weight_dtype_fp16", "model.onnx", fp16_weights, errors=("weight_dtype",)),
    Case("weight_dtype_int8", "model.onnx", int8_weights, errors=("weight_dtype",)),
    # batch rules
    Case("implicit_batch_flip_test", "model.onnx", flip_test, errors=("implicit_batch",)),
    Case("implicit_batch_batch_mean", "model.onnx", batch_mean,
         errors=("implicit_batch", "batch_inconsistent")),
    Case("batch_inconsistent", "model.onnx", hidden_leak, errors=("batch_inconsistent",)),
    # running
    Case("run_failed_fixed_reshape", "model.onnx", fixed_reshape, errors=("run_failed",),
         warnings=("fixed_batch",)),
    Case("non_finite_output", "model.onnx", non_finite, errors=("non_finite_output",)),
    Case("feature_shape_4d", "model.onnx", feature_4d, errors=("feature_shape",)),
    Case("feature_shape_1d", "model.onnx", feature_1d, errors=("feature_shape",)),
    Case("feature_dim", "model.onnx", valid(feature_dim=1024), errors=("feature_dim",)),
    Case("latency", "model.onnx", valid(), errors=("latency",), latency_factor=1e-6),
    Case("several_findings", "model.onnx", three_nodes(fp16=True, feature_dim=1024),
         errors=("graph_too_small", "weight_dtype", "feature_dim")),
    # isolation
    Case("timeout", "model.onnx", hang, errors=("timeout",), wall_seconds=4.0),
    Case("resource_limit", "model.onnx", memory_hog, errors=("resource_limit",), memory_gib=1.5),
]
