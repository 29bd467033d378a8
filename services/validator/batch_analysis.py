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
from services.validator.batch_rules import UNKNOWN, Step, moves_samples, reshapes

_MAX_CONST_ELEMENTS = 1024
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
    # tensor -> batch axis (int) or UNKNOWN; absent: not derived from the input.
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
    main = node.input[derived[0]]
    axis = batch_axis[main]
    if node.op_type in _OPAQUE or axis is UNKNOWN:
        return None, UNKNOWN
    step = Step(node.op_type, node, {a.name: helper.get_attribute_value(a) for a in node.attribute},
                 derived, axis, {batch_axis[node.input[i]] for i in derived},
                 info.ranks.get(main), info)
    for rule in (moves_samples, reshapes):
        outcome = rule(step, batch_axis)
        if outcome is not None:
            return outcome
    # Element-wise and per-sample operators: the batch axis stays, shifted
    # right when broadcasting against a higher-rank operand.
    if len(step.axes_seen) > 1:
        return None, UNKNOWN
    out_rank = info.ranks.get(node.output[0]) if node.output else None
    if out_rank is not None and step.rank is not None and out_rank > step.rank:
        return None, axis + (out_rank - step.rank)
    return None, axis


