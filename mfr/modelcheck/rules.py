"""The static rules: what the validator learns from the ONNX protobuf alone.

Runs inside the sandboxed child (services/validator/probe.py) on a model
parsed with ``load_external_data=False``: nothing here follows a reference
out of the file, and nothing here materialises a weight tensor.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from onnx import TensorProto, helper

from mfr.modelcheck.report import Finding

# Domains of the ONNX standard; anything else (com.microsoft, a vendor's, a
# model-local function library) is rejected as custom_domain.
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
MIN_NODES = 8
INPUT_CHW = (3, 112, 112)
# Like the reference checker, the first 8 nodes' names decide normalisation.
NORMALISATION_WINDOW = 8
SELF_NORMALISED = (0.0, 1.0)
EXTERNAL_NORMALISATION = (127.5, 127.5)
_FLOAT_TYPES = {
    TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.FLOAT8E4M3FN,
    TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ,
}  # fmt: skip


def walk_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from walk_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from walk_graphs(sub)


def all_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    for graph in walk_graphs(model.graph):
        yield from graph.node
    for function in model.functions:
        yield from function.node


def all_tensors(
    model: onnx.ModelProto, *, main_initializers: bool = True
) -> Iterator[onnx.TensorProto]:
    """Every TensorProto: initializers, sparse ones, node attributes, in every graph."""
    for graph in walk_graphs(model.graph):
        if main_initializers or graph is not model.graph:
            yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
    for node in all_nodes(model):
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices


def check_external_data(model: onnx.ModelProto) -> list[Finding]:
    refs = []
    for tensor in all_tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
            where = {e.key: e.value for e in tensor.external_data}.get("location", "?")
            refs.append(f"{tensor.name!r} -> {where!r}")
    if not refs:
        return []
    shown = ", ".join(refs[:3]) + (f" and {len(refs) - 3} more" if len(refs) > 3 else "")
    return [Finding(
        "external_data",
        f"{len(refs)} tensor(s) keep their data in external files ({shown}); "
        "the model must be one self-contained .onnx file (no external data)",
    )]  # fmt: skip


def check_domains(model: onnx.ModelProto) -> list[Finding]:
    custom: dict[str, str] = {}
    for node in all_nodes(model):
        if node.domain not in STANDARD_DOMAINS:
            custom.setdefault(node.domain, node.op_type)
    if not custom:
        return []
    shown = ", ".join(f"{op!r} in {domain!r}" for domain, op in list(custom.items())[:5])
    return [Finding(
        "custom_domain",
        f"operators outside the standard ONNX domains: {shown}; only the standard domains "
        "('' / ai.onnx, ai.onnx.ml) are accepted",
    )]  # fmt: skip


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers: what onnxruntime's get_inputs() lists."""
    initializers = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in initializers]


def dims_of(value: onnx.ValueInfoProto) -> list[int | str | None] | None:
    """Declared dims (int, symbol, or None when unknown); None when not a shaped tensor."""
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for dim in value.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            out.append(dim.dim_value)
        elif dim.dim_param:
            out.append(dim.dim_param)
        else:
            out.append(None)
    return out


def check_interface(model: onnx.ModelProto) -> tuple[list[Finding], bool]:
    """input_count, input_rank, output_count, graph_too_small, input_size, input_type.

    Returns the findings and whether the model can be fed the challenge's
    ``[batch, 3, 112, 112]`` float32 input and read back one output.
    """
    graph = model.graph
    findings: list[Finding] = []
    inputs = real_inputs(graph)
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs[:5]) or "none"
        findings.append(Finding(
            "input_count",
            f"the model has {len(inputs)} inputs ({names}); the challenge feeds exactly one",
        ))  # fmt: skip
    dims = dims_of(inputs[0]) if inputs else None
    if inputs and (dims is None or len(dims) != 4):
        found = "no tensor shape" if dims is None else f"rank {len(dims)} ({_shape(dims)})"
        findings.append(Finding(
            "input_rank", f"the input has {found}; it must be rank 4: [batch, 3, 112, 112]"
        ))  # fmt: skip
    if len(graph.output) != 1:
        findings.append(Finding(
            "output_count",
            f"the model has {len(graph.output)} outputs; exactly one (the feature) is required",
        ))  # fmt: skip
    if len(graph.node) < MIN_NODES:
        findings.append(Finding(
            "graph_too_small",
            f"the graph has {len(graph.node)} nodes; at least {MIN_NODES} are required",
        ))  # fmt: skip
    if dims is not None and len(dims) == 4 and tuple(dims[1:]) != INPUT_CHW:
        findings.append(Finding(
            "input_size",
            f"the input is {_shape(dims)}; it must be [batch, 3, 112, 112] (RGB, 112x112)",
        ))  # fmt: skip
    if inputs and inputs[0].type.HasField("tensor_type"):
        elem = inputs[0].type.tensor_type.elem_type
        if elem != TensorProto.FLOAT:
            findings.append(Finding(
                "input_type",
                f"the input's element type is {_type_name(elem)}; it must be float32",
            ))  # fmt: skip
    feedable = not findings or all(f.code == "graph_too_small" for f in findings)
    return findings, feedable


def detect_normalisation(graph: onnx.GraphProto) -> tuple[tuple[float, float], Finding | None]:
    """(input_mean, input_std) as the reference checker decides it, from node *names*.

    A name starting with ``Sub``/``_minus`` and one starting with
    ``Mul``/``_mul``/``Div`` among the first 8 nodes: the model normalises
    itself and gets raw pixels. A warning is returned when the operator types
    tell another story than the names.
    """
    window = graph.node[:NORMALISATION_WINDOW]
    by_name_sub = any(n.name.startswith(("Sub", "_minus")) for n in window)
    by_name_mul = any(n.name.startswith(("Mul", "_mul", "Div")) for n in window)
    by_type = any(n.op_type == "Sub" for n in window) and any(
        n.op_type in ("Mul", "Div") for n in window
    )
    by_name = by_name_sub and by_name_mul
    values = SELF_NORMALISED if by_name else EXTERNAL_NORMALISATION
    warning = None
    if by_type and not by_name:
        warning = Finding(
            "normalisation_mismatch",
            "Sub and Mul/Div operators are among the first 8 nodes but no node name starts with "
            "Sub/_minus and Mul/_mul/Div; like the reference checker, the platform feeds "
            "(pixel - 127.5) / 127.5. Name the nodes Sub*/Mul* to get raw 0..255 pixels",
        )
    elif by_name and not by_type:
        warning = Finding(
            "normalisation_mismatch",
            "node names among the first 8 start with Sub and Mul/Div, so, like the reference "
            "checker, the platform feeds raw 0..255 pixels, but those nodes are not Sub and "
            "Mul/Div operators",
        )
    return values, warning


def element_size(data_type: int) -> int:
    """Bytes per element, as numpy sees the tensor (the reference checker's test); 0 if unknown."""
    try:
        return helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except Exception:  # noqa: BLE001 - UNDEFINED or a type this onnx does not know
        return 0


def check_weight_dtypes(model: onnx.ModelProto) -> list[Finding]:
    """Every initializer of the main graph at >= 4 bytes an element (the reference rule);
    plus, for the seed's "no float16 weights", no sub-4-byte float tensor anywhere else."""
    bad = [t for t in model.graph.initializer if element_size(t.data_type) < 4]
    bad += [
        t for t in all_tensors(model, main_initializers=False)
        if t.data_type in _FLOAT_TYPES and element_size(t.data_type) < 4
    ]  # fmt: skip
    if not bad:
        return []
    shown = ", ".join(f"{t.name or '<constant>'!r} ({_type_name(t.data_type)})" for t in bad[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return [Finding(
        "weight_dtype",
        f"{len(bad)} weight tensor(s) have elements under 4 bytes: {shown}{more}; "
        "float16, bfloat16, int8, uint8 and bool weights are forbidden (use float32)",
    )]  # fmt: skip


def make_batch_dynamic(model: onnx.ModelProto) -> Finding | None:
    """Give a fixed (or unnamed) batch dimension a symbol, as the reference checker does."""
    inputs = real_inputs(model.graph)
    if not inputs:
        return None
    dims = dims_of(inputs[0])
    if dims is None or len(dims) != 4 or isinstance(dims[0], str):
        return None
    dim = inputs[0].type.tensor_type.shape.dim[0]
    dim.dim_param = "None"  # the reference checker's symbol; clears dim_value
    was = "unnamed" if dims[0] is None else f"fixed at {dims[0]}"
    return Finding(
        "fixed_batch",
        f"the input's batch dimension was {was}; it was made dynamic, as the reference "
        "checker does (the stored model is the dynamic one)",
    )


def _shape(dims: list[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _type_name(data_type: int) -> str:
    try:
        return TensorProto.DataType.Name(data_type).lower()
    except ValueError:
        return f"type {data_type}"
