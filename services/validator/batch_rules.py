"""Per-operator rules of the implicit-batch analysis (services/validator/batch_analysis.py):
for a node on an input-derived path, whether it acts along the batch axis, and where the
batch axis is on its outputs (``UNKNOWN`` once it can no longer be followed)."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

UNKNOWN = None  # derived from the input, batch axis no longer known
_FULL_RANGE = 2**31 - 1  # Slice ends at or beyond this cover the whole axis

REDUCE = {
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
    "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
}


@dataclass(frozen=True)
class Step:
    """One node on an input-derived path, and where the batch axis is on its main input."""

    op: str
    node: onnx.NodeProto
    attrs: dict
    derived: list[int]
    axis: int
    axes_seen: set
    rank: int | None
    info: object  # batch_analysis._Graph: ranks, const_ints()

    def norm(self, a: int) -> int | None:
        if a >= 0:
            return a
        return a + self.rank if self.rank is not None else None


_ALONG = "along the batch axis"


def moves_samples(s: Step, _batch_axis) -> tuple[str | None, int | None] | None:
    """Operators that join, split, pick or repeat along an axis; None: not one of them."""
    op, attrs, axis = s.op, s.attrs, s.axis
    if op == "Concat":
        if len(s.axes_seen) > 1:
            return None, UNKNOWN
        if s.norm(attrs.get("axis", 0)) == axis:
            return f"concatenates input-derived data {_ALONG}", UNKNOWN
        return None, axis
    if op == "Split":
        if s.norm(attrs.get("axis", 0)) == axis:
            return f"splits input-derived data {_ALONG}", UNKNOWN
        return None, axis
    if op in ("Gather", "GatherElements", "ScatterElements"):
        if s.derived[0] != 0:
            return None, UNKNOWN  # only the indices derive from the input
        gather_axis = s.norm(attrs.get("axis", 0))
        if gather_axis == axis:
            return f"selects samples {_ALONG}", UNKNOWN
        if op != "Gather" or (gather_axis is not None and gather_axis > axis):
            return None, axis
        return None, UNKNOWN
    if op in ("Tile", "Expand"):
        return _repeat(op, s.node, axis, s.rank, s.info)
    if op == "Pad":
        pads = s.info.const_ints(s.node.input[1] if len(s.node.input) > 1 else None)
        pads = pads if pads is not None else attrs.get("pads")
        plain = pads is not None and s.rank is not None and len(s.node.input) < 4  # no `axes`
        if plain and len(pads) == 2 * s.rank and (pads[axis] or pads[axis + s.rank]):
            return f"pads {_ALONG}", UNKNOWN
        return None, axis
    if op == "Slice":
        return _slice(s.node, axis, s.rank, s.info), axis
    if op in REDUCE or op in ("ArgMax", "ArgMin"):
        return _reduce(op, s.node, attrs, axis, s.rank, s.info)
    if op in ("TopK", "CumSum", "Hardmax", "Softmax", "LogSoftmax", "LayerNormalization"):
        return _along_axis(op, s.node, attrs, axis, s.norm, s.info), axis
    return None


def reshapes(s: Step, batch_axis) -> tuple[str | None, int | None] | None:
    """Operators that move or mix axes; None: not one of them."""
    op, attrs, axis, rank = s.op, s.attrs, s.axis, s.rank
    if op == "Flatten":
        flat = s.norm(attrs.get("axis", 1))
        if flat == 0:
            return "flattens the batch axis into the features", UNKNOWN
        return None, (0 if flat is not None and axis < flat and flat == 1 else UNKNOWN)
    if op == "BatchNormalization" and attrs.get("training_mode", 0):
        return "normalises with the statistics of the batch (training mode)", axis
    if op == "Transpose":
        perm = attrs.get("perm")
        if perm is None:
            return None, (rank - 1 - axis) if rank is not None else UNKNOWN
        return None, list(perm).index(axis) if axis in perm else UNKNOWN
    if op in ("Unsqueeze", "Squeeze"):
        return None, _squeeze(op, s.node, attrs, axis, rank, s.info)
    if op == "Reshape":
        shape = s.info.const_ints(s.node.input[1] if len(s.node.input) > 1 else None)
        keeps = axis == 0 and shape and shape[0] == 0 and not attrs.get("allowzero", 0)
        return None, 0 if keeps else UNKNOWN
    if op in ("MatMul", "Gemm"):
        return _matmul(op, s.node, attrs, s.derived, batch_axis, s.info)
    if op in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv"):
        if s.derived != [0]:
            return None, UNKNOWN
        if axis == 1:
            return f"convolves {_ALONG}", UNKNOWN
        return None, axis
    return None


def _repeat(op, node, axis, rank, info) -> tuple[str | None, int | None]:
    values = info.const_ints(node.input[1] if len(node.input) > 1 else None)
    if values is None or rank is None:
        return None, UNKNOWN
    if op == "Tile":
        if len(values) == rank and values[axis] != 1:
            return f"repeats samples along the batch axis (repeats {values})", UNKNOWN
        return None, axis
    out_rank = max(rank, len(values))
    shifted = axis + (out_rank - rank)
    index = shifted - (out_rank - len(values))
    if 0 <= index < len(values) and values[index] > 1:
        return f"expands the batch axis to {values[index]} samples", UNKNOWN
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
            return None, UNKNOWN
    else:
        axes = []
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return None, axis
        return "reduces over every axis, the batch axis included", UNKNOWN
    normed = [a + rank if a < 0 and rank is not None else a for a in axes]
    if axis in normed:
        return f"reduces along the batch axis (axes {axes})", UNKNOWN
    if keepdims:
        return None, axis
    if any(a < 0 for a in normed):
        return None, UNKNOWN
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
        return UNKNOWN
    axes = list(axes)
    if op == "Unsqueeze":
        out_rank = rank + len(axes)
        normed = sorted(a + out_rank if a < 0 else a for a in axes)
        position = [p for p in range(out_rank) if p not in normed]
        return position[axis] if axis < len(position) else UNKNOWN
    normed = [a + rank if a < 0 else a for a in axes]
    if axis in normed:
        return UNKNOWN
    return axis - sum(1 for a in normed if a < axis)


def _matmul(op, node, attrs, derived, batch_axis, info) -> tuple[str | None, int | None]:
    problem = "multiplies matrices across the batch axis (samples mix)"
    for i in derived:
        name = node.input[i]
        axis = batch_axis[name]
        rank = info.ranks.get(name)
        if op == "Gemm":
            if i == 1 or (i == 0 and (axis != 0 or attrs.get("transA", 0))):
                return problem, UNKNOWN
            continue
        if rank is None:
            return None, UNKNOWN
        if i == 1 and axis >= rank - 2:
            return problem, UNKNOWN
        if i == 0 and rank >= 2 and axis == rank - 1:
            return problem, UNKNOWN
    if op == "Gemm":
        return None, 0 if 0 in derived else UNKNOWN
    if derived == [0]:
        rank0 = info.ranks.get(node.input[0])
        out_rank = info.ranks.get(node.output[0])
        axis = batch_axis[node.input[0]]
        if rank0 is not None and out_rank is not None and out_rank >= rank0:
            return None, axis + (out_rank - rank0)
        return None, axis
    return None, UNKNOWN
