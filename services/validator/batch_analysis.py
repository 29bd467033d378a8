"""Static detection of implicit batch inference: graphs that mix or multiply samples.

The seed forbids "inserting data-related ops into the graph to enable an
automatic flip test (or similar ideas)". Such a model can give each image the
same feature alone or in a batch (a flip test concatenates the input with its
mirror along the batch axis, runs the backbone once and adds the halves), so
the dynamic batch-consistency test cannot see it; this analysis can.

It follows the batch axis of every tensor derived from the graph input, node
by node in graph order, and flags the operators that act *along* it: Concat,
Tile, Expand, Pad, Split, Gather, a non-trivial Slice, reductions, ArgMax,
TopK, CumSum, softmax and layer norm over it, Flatten(axis=0), training-mode
BatchNormalization, and matrix products that contract it. Where the axis can
no longer be followed (a Reshape to an unknown shape, control flow, Einsum)
the analysis stops following that tensor rather than guess: those cases are
left to the dynamic test (services/validator/probe.py), which compares a
batch against one-by-one runs. Shape computations (Shape, Size and what is
computed from them) are not sample data and are never flagged, so the
``Concat(Shape(x)[0], -1)`` idiom of exported Reshapes passes.
"""

from __future__ import annotations

import contextlib

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mfr.modelcheck.report import Finding
from mfr.modelcheck.rules import real_inputs

_UNKNOWN = None  # derived from the input, batch axis no longer known
_MAX_CONST_ELEMENTS = 1024
_FULL_RANGE = 2**31 - 1  # Slice ends at or beyond this cover the whole axis

_REDUCE = {
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
    "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
}  # fmt: skip
_NOT_SAMPLE_DATA = {"Shape", "Size", "ConstantOfShape", "EyeLike", "RandomNormalLike",
                    "RandomUniformLike", "Bernoulli"}  # fmt: skip
_OPAQUE = {"If", "Loop", "Scan", "Einsum", "NonZero", "GatherND", "ScatterND", "Compress",
           "Unique", "SequenceConstruct", "SplitToSequence", "ConcatFromSequence"}  # fmt: skip


def infer_ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Ranks of the graph's tensors by ONNX shape inference, run on a weightless copy.

    Large initializers become shaped graph inputs, so inference costs nothing
    for a 250 MB model; small ones stay (Reshape targets, axes). Best effort:
    an empty result when inference fails.
    """
    graph = model.graph
    light = onnx.GraphProto(name=graph.name)
    light.node.extend(graph.node)
    light.output.extend(graph.output)
    light.value_info.extend(graph.value_info)
    light.input.extend(graph.input)
    declared = {i.name for i in graph.input}
    for tensor in graph.initializer:
        if int(np.prod(tensor.dims, dtype=np.int64)) <= _MAX_CONST_ELEMENTS:
            light.initializer.append(tensor)
        elif tensor.name not in declared:
            light.input.append(
                helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
            )
    copy = onnx.ModelProto(ir_version=model.ir_version, graph=light)
    copy.opset_import.extend(model.opset_import)
    copy.functions.extend(model.functions)
    try:
        inferred = onnx.shape_inference.infer_shapes(copy, strict_mode=False)
    except Exception:  # noqa: BLE001 - best effort on a hostile graph: no ranks, no guesses
        return {}
    return {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in inferred.graph.value_info
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")
    }


class _Graph:
    """What the analysis knows about the graph's tensors."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13
        )
        self.consts: dict[str, np.ndarray] = {}
        self.ranks: dict[str, int] = infer_ranks(model)
        graph = model.graph
        for tensor in graph.initializer:
            self.ranks[tensor.name] = len(tensor.dims)
            self._keep_const(tensor.name, tensor)
        for value in [*graph.input, *graph.value_info, *graph.output]:
            if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
                self.ranks[value.name] = len(value.type.tensor_type.shape.dim)
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value":
                        self._keep_const(node.output[0], attr.t)
                    elif attr.name == "value_ints":
                        self.consts[node.output[0]] = np.array(attr.ints, np.int64)
                    elif attr.name == "value_int":
                        self.consts[node.output[0]] = np.array(attr.i, np.int64)

    def _keep_const(self, name: str, tensor: onnx.TensorProto) -> None:
        if int(np.prod(tensor.dims, dtype=np.int64)) > _MAX_CONST_ELEMENTS:
            return
        with contextlib.suppress(Exception):  # malformed: not a constant we can read
            self.consts[name] = numpy_helper.to_array(tensor)

    def const_ints(self, name: str | None) -> list[int] | None:
        if not name or name not in self.consts:
            return None
        try:
            return [int(v) for v in np.asarray(self.consts[name]).reshape(-1)]
        except (TypeError, ValueError):
            return None


def find_implicit_batch(model: onnx.ModelProto, limit: int = 3) -> list[Finding]:
    """``implicit_batch`` findings for the operators that act along the batch axis."""
    inputs = real_inputs(model.graph)
    if not inputs:
        return []
    info = _Graph(model)
    # tensor -> batch axis (int) or _UNKNOWN; absent: not derived from the input.
    batch_axis: dict[str, int | None] = {inputs[0].name: 0}
    info.ranks.setdefault(inputs[0].name, 4)
    problems: list[str] = []
    for node in model.graph.node:
        derived = [i for i, name in enumerate(node.input) if name in batch_axis]
        if not derived or node.op_type in _NOT_SAMPLE_DATA:
            continue
        problem, axis = _follow(node, derived, batch_axis, info)
        if problem:
            problems.append(f"node {node.name or '<unnamed>'!r} ({node.op_type}) {problem}")
        for out in node.output:
            if out:
                batch_axis[out] = axis
    findings = [
        Finding(
            "implicit_batch",
            f"{p}: the model must treat each image on its own (the challenge forbids implicit "
            "batch inference, e.g. a built-in flip test)",
        )
        for p in problems[:limit]
    ]
    if len(problems) > limit:
        findings.append(
            Finding("implicit_batch", f"{len(problems) - limit} more operators act along the batch axis")
        )
    return findings


def _follow(
    node: onnx.NodeProto,
    derived: list[int],
    batch_axis: dict[str, int | None],
    info: _Graph,
) -> tuple[str | None, int | None]:
    """(problem or None, batch axis of the node's outputs)."""
    op = node.op_type
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    main = node.input[derived[0]]
    axis = batch_axis[main]
    axes_seen = {batch_axis[node.input[i]] for i in derived}
    rank = info.ranks.get(main)
    if op in _OPAQUE or axis is _UNKNOWN:
        return None, _UNKNOWN

    def norm(a: int) -> int | None:
        if a >= 0:
            return a
        return a + rank if rank is not None else None

    along = "along the batch axis"
    if op == "Concat":
        if len(axes_seen) > 1:
            return None, _UNKNOWN
        if norm(attrs.get("axis", 0)) == axis:
            return f"concatenates input-derived data {along}", _UNKNOWN
        return None, axis
    if op == "Split":
        if norm(attrs.get("axis", 0)) == axis:
            return f"splits input-derived data {along}", _UNKNOWN
        return None, axis
    if op in ("Gather", "GatherElements", "ScatterElements"):
        if derived[0] != 0:
            return None, _UNKNOWN  # only the indices derive from the input
        gather_axis = norm(attrs.get("axis", 0))
        if gather_axis == axis:
            return f"selects samples {along}", _UNKNOWN
        if op != "Gather" or (gather_axis is not None and gather_axis > axis):
            return None, axis
        return None, _UNKNOWN
    if op in ("Tile", "Expand"):
        return _repeat(op, node, axis, rank, info)
    if op == "Pad":
        pads = info.const_ints(node.input[1] if len(node.input) > 1 else None)
        pads = pads if pads is not None else attrs.get("pads")
        plain = pads is not None and rank is not None and len(node.input) < 4  # no `axes`
        if plain and len(pads) == 2 * rank and (pads[axis] or pads[axis + rank]):
            return f"pads {along}", _UNKNOWN
        return None, axis
    if op == "Slice":
        return _slice(node, axis, rank, info), axis
    if op in _REDUCE or op in ("ArgMax", "ArgMin"):
        return _reduce(op, node, attrs, axis, rank, info)
    if op in ("TopK", "CumSum", "Hardmax", "Softmax", "LogSoftmax", "LayerNormalization"):
        return _along_axis(op, node, attrs, axis, norm, info), axis
    if op == "Flatten":
        flat = norm(attrs.get("axis", 1))
        if flat == 0:
            return "flattens the batch axis into the features", _UNKNOWN
        return None, (0 if flat is not None and axis < flat and flat == 1 else _UNKNOWN)
    if op == "BatchNormalization" and attrs.get("training_mode", 0):
        return "normalises with the statistics of the batch (training mode)", axis
    if op == "Transpose":
        perm = attrs.get("perm")
        if perm is None:
            return None, (rank - 1 - axis) if rank is not None else _UNKNOWN
        return None, list(perm).index(axis) if axis in perm else _UNKNOWN
    if op in ("Unsqueeze", "Squeeze"):
        return None, _squeeze(op, node, attrs, axis, rank, info)
    if op == "Reshape":
        shape = info.const_ints(node.input[1] if len(node.input) > 1 else None)
        keeps = axis == 0 and shape and shape[0] == 0 and not attrs.get("allowzero", 0)
        return None, 0 if keeps else _UNKNOWN
    if op in ("MatMul", "Gemm"):
        return _matmul(op, node, attrs, derived, batch_axis, info)
    if op in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv"):
        if derived != [0]:
            return None, _UNKNOWN
        if axis == 1:
            return f"convolves {along}", _UNKNOWN
        return None, axis
    # Element-wise and per-sample operators: the batch axis stays, shifted
    # right when broadcasting against a higher-rank operand.
    if len(axes_seen) > 1:
        return None, _UNKNOWN
    out_rank = info.ranks.get(node.output[0]) if node.output else None
    if out_rank is not None and rank is not None and out_rank > rank:
        return None, axis + (out_rank - rank)
    return None, axis


def _repeat(op, node, axis, rank, info) -> tuple[str | None, int | None]:
    values = info.const_ints(node.input[1] if len(node.input) > 1 else None)
    if values is None or rank is None:
        return None, _UNKNOWN
    if op == "Tile":
        if len(values) == rank and values[axis] != 1:
            return f"repeats samples along the batch axis (repeats {values})", _UNKNOWN
        return None, axis
    out_rank = max(rank, len(values))
    shifted = axis + (out_rank - rank)
    index = shifted - (out_rank - len(values))
    if 0 <= index < len(values) and values[index] > 1:
        return f"expands the batch axis to {values[index]} samples", _UNKNOWN
    return None, shifted


def _slice(node, axis, rank, info) -> str | None:
    if len(node.input) < 3:
        return None  # opset < 10 Slice carries attributes; never seen on the batch axis
    starts = info.const_ints(node.input[1])
    ends = info.const_ints(node.input[2])
    axes = info.const_ints(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    steps = info.const_ints(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    if starts is None or ends is None:
        return None
    axes = axes if axes is not None else list(range(len(starts)))
    for i, a in enumerate(axes):
        a = a + rank if a < 0 and rank is not None else a
        if a != axis:
            continue
        step = steps[i] if steps is not None and i < len(steps) else 1
        whole = starts[i] == 0 and ends[i] >= _FULL_RANGE and step == 1
        if not whole:
            return f"slices the batch axis ({starts[i]}:{ends[i]}:{step})"
    return None


def _reduce(op, node, attrs, axis, rank, info) -> tuple[str | None, int | None]:
    keepdims = attrs.get("keepdims", 1)
    if op in ("ArgMax", "ArgMin"):
        axes = [attrs.get("axis", 0)]
    elif "axes" in attrs:
        axes = list(attrs["axes"])
    elif len(node.input) > 1 and node.input[1]:
        axes = info.const_ints(node.input[1])
        if axes is None:
            return None, _UNKNOWN
    else:
        axes = []
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return None, axis
        return "reduces over every axis, the batch axis included", _UNKNOWN
    normed = [a + rank if a < 0 and rank is not None else a for a in axes]
    if axis in normed:
        return f"reduces along the batch axis (axes {axes})", _UNKNOWN
    if keepdims:
        return None, axis
    if any(a < 0 for a in normed):
        return None, _UNKNOWN
    return None, axis - sum(1 for a in normed if a < axis)


def _along_axis(op, node, attrs, axis, norm, info) -> str | None:
    if op == "CumSum":
        values = info.const_ints(node.input[1] if len(node.input) > 1 else None)
        target = norm(values[0]) if values else None
    elif op == "LayerNormalization":
        first = norm(attrs.get("axis", -1))
        if first is not None and first <= axis:
            return "normalises across the batch axis"
        return None
    else:
        default = -1 if op == "TopK" or info.opset >= 13 else 1
        target = norm(attrs.get("axis", default))
        if op in ("Softmax", "LogSoftmax", "Hardmax") and info.opset < 13:
            # Before opset 13 these flatten to 2-D at `axis`: every axis from
            # there on is normalised together.
            if target is not None and target <= axis:
                return "normalises across the batch axis"
            return None
    if target == axis:
        return f"works along the batch axis ({op})"
    return None


def _squeeze(op, node, attrs, axis, rank, info) -> int | None:
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1:
        axes = info.const_ints(node.input[1])
    if axes is None or rank is None:
        return _UNKNOWN
    axes = list(axes)
    if op == "Unsqueeze":
        out_rank = rank + len(axes)
        normed = sorted(a + out_rank if a < 0 else a for a in axes)
        position = [p for p in range(out_rank) if p not in normed]
        return position[axis] if axis < len(position) else _UNKNOWN
    normed = [a + rank if a < 0 else a for a in axes]
    if axis in normed:
        return _UNKNOWN
    return axis - sum(1 for a in normed if a < axis)


def _matmul(op, node, attrs, derived, batch_axis, info) -> tuple[str | None, int | None]:
    problem = "multiplies matrices across the batch axis (samples mix)"
    for i in derived:
        name = node.input[i]
        axis = batch_axis[name]
        rank = info.ranks.get(name)
        if op == "Gemm":
            if i == 1 or (i == 0 and (axis != 0 or attrs.get("transA", 0))):
                return problem, _UNKNOWN
            continue
        if rank is None:
            return None, _UNKNOWN
        if i == 1 and axis >= rank - 2:
            return problem, _UNKNOWN
        if i == 0 and rank >= 2 and axis == rank - 1:
            return problem, _UNKNOWN
    if op == "Gemm":
        return None, 0 if 0 in derived else _UNKNOWN
    if derived == [0]:
        rank0 = info.ranks.get(node.input[0])
        out_rank = info.ranks.get(node.output[0])
        axis = batch_axis[node.input[0]]
        if rank0 is not None and out_rank is not None and out_rank >= rank0:
            return None, axis + (out_rank - rank0)
        return None, axis
    return None, _UNKNOWN
