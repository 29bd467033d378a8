"""ONNX operators in torch: the op set face-recognition backbones are exported with.

Each entry maps a node's inputs (tensors, or None for an omitted optional input)
and attributes to its outputs, following the ONNX operator definitions (opset 11
to 21) in float32. An operator not here, or an attribute value not handled, is
:class:`Unconvertible`: the model then runs on onnxruntime, the reference
runtime (services/embedder/runtime.py, ``open_runtime``).

Not onnx2torch: it imports torchvision at import time (for operators face models
do not use), which ties the GPU image to a second CUDA-specific wheel whose
version must match torch's; the operators below are all the backbones need.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Op = Callable[[list[Tensor | None], dict], list[Tensor]]


class Unconvertible(Exception):
    """The graph uses something this converter does not run."""


def _ints(t: Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _same_pads(pads: list[int], dims: int) -> list[int]:
    begin, end = pads[:dims], pads[dims:]
    if begin != end:
        raise Unconvertible(f"asymmetric pads {pads}")
    return begin


def _spatial(attrs: dict, dims: int) -> tuple[list[int], list[int], list[int]]:
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
        raise Unconvertible(f"auto_pad {attrs['auto_pad']!r}")
    strides = list(attrs.get("strides", [1] * dims))
    pads = _same_pads(list(attrs.get("pads", [0] * 2 * dims)), dims)
    dilations = list(attrs.get("dilations", [1] * dims))
    return strides, pads, dilations


def conv(inputs, attrs):
    x, weight, bias = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    if x.dim() != 4:
        raise Unconvertible(f"Conv on {x.dim()}-D input")
    strides, pads, dilations = _spatial(attrs, 2)
    return [F.conv2d(x, weight, bias, strides, pads, dilations, int(attrs.get("group", 1)))]


def batch_norm(inputs, attrs):
    if attrs.get("training_mode", 0):
        raise Unconvertible("BatchNormalization in training mode")
    x, scale, bias, mean, var = inputs[:5]
    return [F.batch_norm(x, mean, var, scale, bias, False, 0.0, float(attrs.get("epsilon", 1e-5)))]


def gemm(inputs, attrs):
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    a = a.t() if attrs.get("transA", 0) else a
    b = b.t() if attrs.get("transB", 0) else b
    y = torch.matmul(a, b)
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c if beta == 1.0 else c * beta)
    return [y]


def pool(kind: str) -> Op:
    def run(inputs, attrs):
        x = inputs[0]
        kernel = list(attrs["kernel_shape"])
        strides, pads, dilations = _spatial(attrs, len(kernel))
        ceil = bool(attrs.get("ceil_mode", 0))
        if kind == "max":
            return [F.max_pool2d(x, kernel, strides, pads, dilations, ceil)]
        if dilations != [1, 1]:
            raise Unconvertible("dilated AveragePool")
        return [F.avg_pool2d(x, kernel, strides, pads, ceil,
                             bool(attrs.get("count_include_pad", 0)))]
    return run


def reshape(inputs, attrs):
    x, shape = inputs[0], _ints(inputs[1])
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


def flatten(inputs, attrs):
    x = inputs[0]
    axis = _axis(int(attrs.get("axis", 1)), x.dim())
    return [x.reshape(math.prod(x.shape[:axis]), -1)]


def unsqueeze(inputs, attrs):
    x = inputs[0]
    axes = _ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else attrs["axes"]
    rank = x.dim() + len(axes)
    for axis in sorted(_axis(a, rank) for a in axes):
        x = x.unsqueeze(axis)
    return [x]


def squeeze(inputs, attrs):
    x = inputs[0]
    axes = _ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else \
        attrs.get("axes")
    if axes is None:
        return [x.squeeze()]
    for axis in sorted((_axis(a, x.dim()) for a in axes), reverse=True):
        x = x.squeeze(axis)
    return [x]


def gather(inputs, attrs):
    x, index = inputs
    axis = _axis(int(attrs.get("axis", 0)), x.dim())
    flat = index.reshape(-1).long()
    flat = torch.where(flat < 0, flat + x.shape[axis], flat)
    out = x.index_select(axis, flat)
    return [out.reshape(*x.shape[:axis], *index.shape, *x.shape[axis + 1:])]


def concat(inputs, attrs):
    parts = [t for t in inputs if t is not None]
    return [torch.cat(parts, _axis(int(attrs["axis"]), parts[0].dim()))]


def slice_(inputs, attrs):
    x = inputs[0]
    starts, ends = _ints(inputs[1]), _ints(inputs[2])
    axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else \
        list(range(len(starts)))
    steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step <= 0:
            raise Unconvertible("Slice with a negative step")
        size = x.shape[_axis(axis, x.dim())]
        index[_axis(axis, x.dim())] = slice(max(-size, min(start, size)),
                                            max(-size, min(end, size)), step)
    return [x[tuple(index)]]


def reduce(kind: str) -> Op:
    def run(inputs, attrs):
        x = inputs[0]
        axes = _ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else \
            attrs.get("axes")
        dims = list(range(x.dim())) if not axes else [_axis(a, x.dim()) for a in axes]
        keep = bool(attrs.get("keepdims", 1))
        if kind == "mean":
            return [x.mean(dims, keepdim=keep)]
        if kind == "sum":
            return [x.sum(dims, keepdim=keep)]
        return [torch.sqrt((x * x).sum(dims, keepdim=keep))]  # L2
    return run


def clip(inputs, attrs):
    x = inputs[0]
    low = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("min")
    high = inputs[2] if len(inputs) > 2 and inputs[2] is not None else attrs.get("max")
    return [torch.clamp(x, None if low is None else float(low),
                        None if high is None else float(high))]


def cast(inputs, attrs):
    kinds = {1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool, 11: torch.float64}
    to = int(attrs["to"])
    if to not in kinds:
        raise Unconvertible(f"Cast to type {to}")
    return [inputs[0].to(kinds[to])]


def pad(inputs, attrs):
    mode = attrs.get("mode", b"constant")
    if mode not in (b"constant", "constant") or (len(inputs) > 3 and inputs[3] is not None):
        raise Unconvertible(f"Pad mode {mode!r} or with axes")
    x, pads = inputs[0], _ints(inputs[1])
    value = float(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else 0.0
    half = len(pads) // 2
    order = [p for axis in reversed(range(half)) for p in (pads[axis], pads[axis + half])]
    return [F.pad(x, order, value=value)]


def lp_normalization(inputs, attrs):
    x = inputs[0]
    norm = torch.linalg.vector_norm(x, ord=int(attrs.get("p", 2)),
                                    dim=_axis(int(attrs.get("axis", -1)), x.dim()), keepdim=True)
    return [x / norm]


def _unary(function: Callable[[Tensor], Tensor]) -> Op:
    return lambda inputs, attrs: [function(inputs[0])]


def _binary(function: Callable[[Tensor, Tensor], Tensor]) -> Op:
    return lambda inputs, attrs: [function(inputs[0], inputs[1])]


OPS: dict[str, Op] = {
    "Conv": conv, "BatchNormalization": batch_norm, "Gemm": gemm,
    "MatMul": _binary(torch.matmul), "Add": _binary(torch.add), "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul), "Div": _binary(torch.div), "Pow": _binary(torch.pow),
    "PRelu": lambda i, a: [torch.where(i[0] >= 0, i[0], i[0] * i[1])],
    "Relu": _unary(torch.relu), "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh),
    "Sqrt": _unary(torch.sqrt), "Exp": _unary(torch.exp), "Neg": _unary(torch.neg),
    "LeakyRelu": lambda i, a: [F.leaky_relu(i[0], float(a.get("alpha", 0.01)))],
    "Identity": _unary(lambda x: x), "Dropout": _unary(lambda x: x),
    "Flatten": flatten, "Reshape": reshape, "Transpose": lambda i, a: [
        i[0].permute(*a["perm"]) if "perm" in a else i[0].permute(*reversed(range(i[0].dim())))],
    "Concat": concat, "Unsqueeze": unsqueeze, "Squeeze": squeeze, "Gather": gather,
    "Slice": slice_, "Shape": lambda i, a: [torch.tensor(list(i[0].shape), dtype=torch.int64)],
    "MaxPool": pool("max"), "AveragePool": pool("average"),
    "GlobalAveragePool": lambda i, a: [i[0].mean(dim=list(range(2, i[0].dim())), keepdim=True)],
    "ReduceMean": reduce("mean"), "ReduceSum": reduce("sum"), "ReduceL2": reduce("l2"),
    "Clip": clip, "Cast": cast, "Pad": pad, "LpNormalization": lp_normalization,
}
