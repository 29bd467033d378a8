"""Models for the validator's corpus (mfr/onnxzoo/corpus.py): one or more per error code.

Everything is built from mfr.onnxzoo's tiny model (milliseconds to run).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from mfr.onnxzoo.graph import GraphBuilder, feature_output, image_input
from mfr.onnxzoo.tiny import build_tiny_model, tiny_trunk, tiny_trunk_width

FEATURE_DIM = 128
_TAIL = tiny_trunk_width()


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


def _busy_loop(g: GraphBuilder, trips: str) -> str:
    """A Loop of ``trips`` (int64 scalar) do-nothing iterations; its output is 0.0 (float)."""
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
    return g.node("Mul", [count, g.constant("nothing", np.array(0.0, np.float32))])


def _batch_size(g: GraphBuilder) -> str:
    return g.node("Gather", [g.node("Shape", ["input"]), g.constant("zero", np.array(0, np.int64))])


def hang() -> bytes:
    """A Loop whose trip count comes from the input's shape: runs for ever at run time."""
    g = GraphBuilder(0)
    trips = g.node("Mul", [_batch_size(g), g.constant("many", np.array(10**15, np.int64))])
    _head(g, tiny_trunk(g, g.node("Add", ["input", _busy_loop(g, trips)])))
    return _model(g)


def batch_trap() -> bytes:
    """Correct at batch 1 and 32, the sizes the reference checker runs; at any other batch
    size a Loop of 10**12 empty iterations (hours) before the answer."""
    g = GraphBuilder(0)
    n = _batch_size(g)
    one, thirty_two = (g.constant(name, np.array(v, np.int64))
                       for name, v in (("one", 1), ("thirty_two", 32)))
    off = g.node("Mul", [g.node("Sub", [n, one]), g.node("Sub", [n, thirty_two])])
    hit = g.node("Min", [g.node("Mul", [off, off]), one])  # 0 at sizes 1 and 32, else 1
    trips = g.node("Mul", [hit, g.constant("many", np.array(10**12, np.int64))])
    _head(g, tiny_trunk(g, g.node("Add", ["input", _busy_loop(g, trips)])))
    return _model(g)


def stall_at_batch(size: int = 32) -> bytes:
    """Correct at every batch size but ``size``, where a Loop of 10**12 empty iterations
    (hours) runs first: a checker that reaches that size is still there when a test stops it."""
    g = GraphBuilder(0)
    one = g.constant("one", np.array(1, np.int64))
    off = g.node("Sub", [_batch_size(g), g.constant("size", np.array(size, np.int64))])
    hit = g.node("Sub", [one, g.node("Min", [g.node("Mul", [off, off]), one])])  # 1 at size
    trips = g.node("Mul", [hit, g.constant("many", np.array(10**12, np.int64))])
    _head(g, tiny_trunk(g, g.node("Add", ["input", _busy_loop(g, trips)])))
    return _model(g)


def memory_hog(per_image_mb: int = 2400) -> bytes:
    """Allocates about ``per_image_mb`` per image of the batch at run time. The default,
    2.4 GB, is more than the corpus's 1.5 GB limit, less than the machine has, so only the
    validator's memory limit stops it."""
    g = GraphBuilder(0)
    blowup = _const(g, "blowup", 1, max(1, round(per_image_mb / 19.27)), 128, 1)
    big = g.node("ConstantOfShape", [g.node("Mul", [g.node("Shape", ["input"]), blowup])])
    peak = g.node("ReduceMax", [big], keepdims=0)
    _head(g, tiny_trunk(g, g.node("Add", ["input", peak])))
    return _model(g)


def nan_on_dark_images() -> bytes:
    """Correct features for bright images, NaN rows for dark ones: sqrt(mean pixel - c)."""
    g = GraphBuilder(0)
    y = g.gemm(tiny_trunk(g, "input"), _TAIL, FEATURE_DIM)
    brightness = g.node("ReduceMean", ["input"], axes=[1, 2, 3], keepdims=0)
    gate = g.node("Sqrt", [g.node("Sub", [brightness, g.constant("c", np.array(-0.2,
                                                                               np.float32))])])
    g.node("Mul", [y, g.node("Unsqueeze", [gate, _const(g, "axis", 1)])], out="features")
    return _model(g)


def crash_on_bright_images() -> bytes:
    """An index computed from the pixels: out of range (a runtime error) on bright images."""
    g = GraphBuilder(0)
    brightness = g.node("ReduceMax", ["input"], keepdims=0)
    index = g.node("Cast", [g.node("Mul", [brightness, g.constant("ten", np.array(10.0,
                                                                                   np.float32))])],
                   to=TensorProto.INT64)
    table = g.node("Gather", [g.constant("table", np.zeros(5, np.float32)), index])
    _head(g, tiny_trunk(g, g.node("Add", ["input", table])))
    return _model(g)


def not_onnx() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
