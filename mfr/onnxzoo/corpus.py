"""A corpus of generated uploads, one or more per validator code, with the verdict each must get.

Tests run every case through the library, ``mfr validate`` and the gRPC
service; demos can use it to show rejections. Everything is built from
mfr.onnxzoo's tiny model (milliseconds to run) and stays small on disk: the
compression bombs *declare* gigabytes, they do not contain them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mfr.onnxzoo.hostile import (
    batch_mean,
    batch_trap,
    double_input,
    external_data,
    feature_1d,
    feature_4d,
    fixed_reshape,
    flip_test,
    fp16_weights,
    hang,
    hidden_leak,
    input_96,
    int8_weights,
    memory_hog,
    non_finite,
    not_onnx,
    rank3_input,
    three_nodes,
    two_inputs,
    two_outputs,
    valid,
    with_tail,
)
from mfr.onnxzoo.zips import corrupt_member, declared_bomb, readme, truncated_zip, zipped

__all__ = ["CASES", "SMALL_TRACK_TOML", "Case", "write_case"]

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
    # works at the checker's batch sizes (1, 32), hangs at the embedder's others
    Case("timeout_batch_trap", "model.onnx", batch_trap, errors=("timeout",), wall_seconds=6.0),
    Case("resource_limit", "model.onnx", memory_hog, errors=("resource_limit",), memory_gib=1.5),
]
