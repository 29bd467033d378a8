"""The static rules and the project's own ONNX builders, on small hand-made graphs."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mfr.modelcheck import rules
from mfr.modelcheck.archive import ZipPolicy, check_entries, is_zip
from mfr.modelcheck.report import ValidationReport
from mfr.onnxzoo import (
    IRESNET_STAGES,
    GraphBuilder,
    build_iresnet,
    build_tiny_model,
    feature_output,
    image_input,
    iresnet_parameter_count,
    tiny_trunk,
)
from services.validator.batch_analysis import find_implicit_batch

# --- onnxzoo ----------------------------------------------------------------------


@pytest.mark.parametrize(("depth", "seed_mb"), [(18, 91.658), (34, 130.245), (50, 166.305),
                                                (100, 248.590)])
def test_iresnet_sizes_match_the_seed_baselines(depth: int, seed_mb: float):
    assert iresnet_parameter_count(depth) * 4 / 2**20 == pytest.approx(seed_mb, abs=0.1)


def test_iresnet18_is_built_as_counted_and_is_valid():
    model = build_iresnet(18, feature_dim=256, seed=1)
    onnx.checker.check_model(model)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    assert params == iresnet_parameter_count(18, feature_dim=256)
    assert rules.dims_of(model.graph.input[0]) == ["None", 3, 112, 112]
    assert rules.dims_of(model.graph.output[0]) == ["None", 256]
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    # stem + 2 per block + one shortcut per stage
    assert len(convs) == 1 + 2 * sum(IRESNET_STAGES[18]) + 4
    assert find_implicit_batch(model) == []
    assert rules.detect_normalisation(model.graph) == ((127.5, 127.5), None)


def test_builders_are_seeded_and_tiny_models_pass_the_static_rules():
    assert build_tiny_model(seed=4).SerializeToString() == build_tiny_model(seed=4).SerializeToString()
    assert build_tiny_model(seed=4).SerializeToString() != build_tiny_model(seed=5).SerializeToString()
    model = build_tiny_model(normalise_inside=True)
    findings, feedable = rules.check_interface(model)
    assert findings == [] and feedable
    assert rules.detect_normalisation(model.graph) == ((0.0, 1.0), None)
    assert rules.check_weight_dtypes(model) == []


# --- normalisation: the checker reads names, not operator types ------------------


def _named(names_ops: list[tuple[str, str]]) -> onnx.GraphProto:
    nodes = [helper.make_node(op, ["a", "b"], [f"o{i}"], name=name)
             for i, (name, op) in enumerate(names_ops)]
    return helper.make_graph(nodes, "g", [], [])


@pytest.mark.parametrize(
    ("nodes", "mean_std", "warned"),
    [
        ([("_minusscalar0", "Sub"), ("_mulscalar0", "Mul")], (0.0, 1.0), False),  # mxnet export
        ([("Sub_0", "Sub"), ("Div_1", "Div")], (0.0, 1.0), False),
        ([("/Sub", "Sub"), ("/Mul", "Mul")], (127.5, 127.5), True),  # torch>=2 names: not detected
        ([("Sub_0", "Conv"), ("Mul_1", "Conv")], (0.0, 1.0), True),
        ([("Sub_0", "Sub")], (127.5, 127.5), False),
        ([("Conv_0", "Conv")] * 8 + [("Sub_8", "Sub"), ("Mul_9", "Mul")], (127.5, 127.5), False),
    ],
)
def test_normalisation_is_detected_from_the_first_eight_node_names(nodes, mean_std, warned):
    values, warning = rules.detect_normalisation(_named(nodes))
    assert values == mean_std
    assert (warning is not None) == warned


# --- weights ----------------------------------------------------------------------


def _with_tensors(initializers: list[onnx.TensorProto], constants=()) -> onnx.ModelProto:
    model = build_tiny_model()
    model.graph.initializer.extend(initializers)
    for i, tensor in enumerate(constants):
        model.graph.node.append(helper.make_node("Constant", [], [f"c{i}"], value=tensor))
    return model


@pytest.mark.parametrize(
    ("tensor", "rejected"),
    [
        (helper.make_tensor("b", TensorProto.BOOL, [2], [True, False]), True),
        (helper.make_tensor("u", TensorProto.UINT8, [2], [1, 2]), True),
        (helper.make_tensor("bf", TensorProto.BFLOAT16, [2], [1, 2]), True),
        (helper.make_tensor("d", TensorProto.DOUBLE, [2], [1.0, 2.0]), False),
        (helper.make_tensor("i", TensorProto.INT32, [2], [1, 2]), False),
    ],
)
def test_initializer_element_size_rule(tensor, rejected):
    findings = rules.check_weight_dtypes(_with_tensors([tensor]))
    assert [f.code for f in findings] == (["weight_dtype"] if rejected else [])


def test_float16_constants_are_weights_too_but_small_int_constants_are_not():
    fp16 = helper.make_tensor("w", TensorProto.FLOAT16, [2], np.array([1, 2], np.float16).view(np.uint16))
    int8 = helper.make_tensor("k", TensorProto.INT8, [2], [1, 2])
    assert [f.code for f in rules.check_weight_dtypes(_with_tensors([], [fp16]))] == ["weight_dtype"]
    assert rules.check_weight_dtypes(_with_tensors([], [int8])) == []


def test_external_data_is_found_in_subgraphs_and_attributes_without_reading_it():
    tensor = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../../secrets.bin")
    body = helper.make_graph([helper.make_node("Constant", [], ["y"], value=tensor)], "then", [],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = build_tiny_model()
    model.graph.node.append(helper.make_node("If", ["cond"], ["z"], then_branch=body, else_branch=body))
    (finding,) = rules.check_external_data(model)
    assert finding.code == "external_data" and "secrets.bin" in finding.message


def test_domains_inside_functions_and_subgraphs_are_checked():
    model = build_tiny_model()
    model.functions.append(helper.make_function(
        "local.fn", "Double", ["x"], ["y"], [helper.make_node("Add", ["x", "x"], ["y"])],
        [helper.make_opsetid("", 13)]))  # fmt: skip
    model.graph.node.append(helper.make_node("Double", ["a"], ["b"], domain="local.fn"))
    (finding,) = rules.check_domains(model)
    assert "local.fn" in finding.message
    ml = build_tiny_model()
    ml.graph.node.append(helper.make_node("Normalizer", ["a"], ["b"], domain="ai.onnx.ml"))
    assert rules.check_domains(ml) == []


def test_fixed_or_unnamed_batch_is_made_dynamic_as_the_checker_does():
    model = build_tiny_model(batch=1)
    assert rules.make_batch_dynamic(model).code == "fixed_batch"
    assert rules.dims_of(model.graph.input[0]) == ["None", 3, 112, 112]
    assert rules.make_batch_dynamic(model) is None  # already dynamic


# --- implicit batch ----------------------------------------------------------------


def _variant(tail_op) -> onnx.ModelProto:
    g = GraphBuilder(0)
    y = tail_op(g, tiny_trunk(g, "input"))
    g.node("Identity", [y], out="features")
    return g.model([image_input("input")], [feature_output("features", 16)])


def _ints(g: GraphBuilder, name: str, *values: int) -> str:
    return g.constant(name, np.array(values, np.int64))


FLAGGED = {
    "tile": lambda g, t: g.node("Tile", [t, _ints(g, "r", 2, 1)]),
    "gemm_b": lambda g, t: g.node("Gemm", [g.constant("a", np.ones((3, 784), np.float32)), t],
                                  transB=1),
    "gram": lambda g, t: g.node("MatMul", [g.node("Transpose", [t], perm=[1, 0]), t]),
    "flatten0": lambda g, t: g.node("Flatten", [t], axis=0),
    "gather0": lambda g, t: g.node("Gather", [t, _ints(g, "i", 0)], axis=0),
    "softmax0": lambda g, t: g.node("Softmax", [t], axis=0),
    "pad": lambda g, t: g.node("Pad", [t, _ints(g, "p", 1, 0, 0, 0)]),
    "expand": lambda g, t: g.node("Expand", [g.node("ReduceMean", [t], axes=[1], keepdims=1),
                                             _ints(g, "s", 4, 1)]),
    "reduce_negative_axis": lambda g, t: g.node("ReduceSum", [t, _ints(g, "ax", -2)], keepdims=1),
    "reduce_all": lambda g, t: g.node("ReduceMax", [t], keepdims=1),
    "slice_batch": lambda g, t: g.node("Slice", [t, _ints(g, "s", 0), _ints(g, "e", 1),
                                                 _ints(g, "a", 0)]),
    "concat_after_transpose": lambda g, t: g.node("Concat", [
        g.node("Transpose", [t], perm=[1, 0]), g.node("Transpose", [t], perm=[1, 0])], axis=1),
}

PASSES = {
    # torch's x.view(x.size(0), -1): a Concat on axis 0 of *shape* values
    "view_idiom": lambda g, t: g.node("Reshape", [t, g.node("Concat", [
        g.node("Unsqueeze", [g.node("Gather", [g.node("Shape", [t]), g.constant(
            "z", np.array(0, np.int64))], axis=0), _ints(g, "u", 0)]),
        _ints(g, "m", -1)], axis=0)]),
    "full_slice_on_batch": lambda g, t: g.node("Slice", [t, _ints(g, "s", 0, 0),
                                                         _ints(g, "e", 2**63 - 1, 16),
                                                         _ints(g, "a", 0, 1)]),
    "l2_normalise": lambda g, t: g.node("Div", [t, g.node("ReduceL2", [t], axes=[1], keepdims=1)]),
    "softmax1": lambda g, t: g.node("Softmax", [t], axis=1),
    "gather1": lambda g, t: g.node("Gather", [t, _ints(g, "i", 0)], axis=1),
    "concat_features": lambda g, t: g.node("Concat", [t, t], axis=1),
    "unsqueeze_squeeze": lambda g, t: g.node("Squeeze", [
        g.node("Unsqueeze", [t, _ints(g, "a", 1)]), _ints(g, "b", 1)]),
}


@pytest.mark.parametrize("name", FLAGGED)
def test_operators_along_the_batch_axis_are_flagged(name):
    findings = find_implicit_batch(_variant(FLAGGED[name]))
    assert [f.code for f in findings] == ["implicit_batch"]


@pytest.mark.parametrize("name", PASSES)
def test_per_sample_graphs_are_not_flagged(name):
    assert find_implicit_batch(_variant(PASSES[name])) == []


# --- zip rules (metadata only) -----------------------------------------------------


def _entries(*names_sizes: tuple[str, int, int]) -> list[zipfile.ZipInfo]:
    out = []
    for name, size, compressed in names_sizes:
        info = zipfile.ZipInfo(name)
        info.file_size, info.compress_size = size, compressed
        info.external_attr = 0o100644 << 16
        out.append(info)
    return out


@pytest.mark.parametrize(
    ("entries", "codes"),
    [
        (_entries(("model.onnx", 10, 9)), []),
        (_entries(("C:\\model.onnx", 10, 9)), ["zip_unsafe"]),
        (_entries(("a\\..\\..\\model.onnx", 10, 9)), ["zip_unsafe"]),
        (_entries(("model.onnx", 2**40, 2**32)), ["zip_unsafe"]),  # 256x
        (_entries(*[(f"f{i}.txt", 1, 1) for i in range(65)]), ["zip_unsafe"]),
        (_entries(("model.onnx", 10, 9), ("docs/notes.txt", 100 * 2**20, 99 * 2**20)),
         ["zip_unsafe"]),
        (_entries(("model.onnx", 2 * 2**30, 2 * 2**30)), ["model_too_large"]),
    ],
)
def test_zip_entry_rules(entries, codes):
    report = ValidationReport()
    check_entries(entries, 2**30, report, ZipPolicy())
    assert report.error_codes == codes


@pytest.mark.parametrize(
    ("mode", "codes"),
    [
        (0o600, []),  # what zipfile.writestr stores: permissions, no file type
        (0o100644, []),  # a regular file, as zip(1) stores it
        (0o120777, ["zip_unsafe"]),  # a symbolic link
        (0o010644, ["zip_unsafe"]),  # a FIFO
        (0o020644, ["zip_unsafe"]),  # a character device
    ],
)
def test_entry_file_types(mode, codes):
    (info,) = _entries(("model.onnx", 10, 9))
    info.external_attr = mode << 16
    report = ValidationReport()
    check_entries([info], 2**30, report, ZipPolicy())
    assert report.error_codes == codes


def test_a_zip_written_by_python_writestr_is_accepted(tmp_path: Path):
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.onnx", b"\x08\x07")
    with zipfile.ZipFile(path) as archive:
        entries = archive.infolist()
    report = ValidationReport()
    assert check_entries(entries, 2**30, report, ZipPolicy()) is not None
    assert report.error_codes == []


def test_upload_kind_is_sniffed_when_the_name_says_nothing(tmp_path: Path):
    archive = tmp_path / "upload"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("model.onnx", b"x")
    plain = tmp_path / "upload2"
    plain.write_bytes(build_tiny_model().SerializeToString())
    assert is_zip(archive) and not is_zip(plain)
