"""IResNet-shaped ONNX networks with seeded random weights (no torch, no download).

The shape is arcface_torch's ``iresnet``: a 3x3 stem of 64 channels with
PReLU, four stages of ``IBasicBlock`` (BN, conv3x3, BN, PReLU, conv3x3
with the stage's stride, BN, plus a shortcut) of widths 64/128/256/512,
then BN, flatten, a 25088 -> ``feature_dim`` fully connected layer and a BN
over the feature. Batch norms that follow a convolution are folded into the
convolution's bias, as ``torch.onnx.export`` does in eval mode, so the node
list, the parameter count (R100: 65.2 M, 248.6 MB) and the cost (R100: about
24 GFLOPs at 112x112) match the seed's exported baselines.

Uses: the validator's latency reference (IResNet-100, DESIGN.md section 5),
random-weight baselines and benchmarks.
"""

from __future__ import annotations

import onnx

from mfr.onnxzoo.graph import GraphBuilder, feature_output, image_input

# depth -> blocks per stage (arcface_torch iresnet18/34/50/100/200).
IRESNET_STAGES: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}
STAGE_WIDTHS = (64, 128, 256, 512)

# The seed's V100 latencies (onnxruntime-gpu 1.6, batch 1), in ms.
V100_LATENCY_MS: dict[int, float] = {18: 1.856, 34: 3.054, 50: 4.262, 100: 7.031}

# Residual branches end with a small gain so that 100 layers of random weights
# keep activations finite and of sane magnitude (what zero-init-ish trained
# nets look like), without changing shape or cost.
_RESIDUAL_GAIN = 0.2


def build_iresnet(
    depth: int,
    *,
    feature_dim: int = 512,
    seed: int = 0,
    normalise_inside: bool = False,
    batch: int | str = "None",
    input_name: str = "input.1",
    output_name: str = "features",
) -> onnx.ModelProto:
    """Build IResNet-``depth`` (18, 34, 50, 100 or 200) with seeded random float32 weights.

    ``normalise_inside`` prepends ``Sub``/``Mul`` nodes computing
    ``(x - 127.5) / 127.5``, so the reference checker's name-based detection
    feeds the model raw 0..255 pixels. ``batch`` is the input's batch
    dimension: a symbol (dynamic, the default) or a fixed int.
    """
    if depth not in IRESNET_STAGES:
        known = ", ".join(str(d) for d in IRESNET_STAGES)
        raise ValueError(f"no IResNet-{depth}; known depths: {known}")
    g = GraphBuilder(seed)
    x = input_name
    if normalise_inside:
        x = g.normalise_input(x)
    # Stem: conv3x3(3 -> 64) + BN folded, PReLU.
    x = g.conv(x, 3, 64, 3)
    x = g.prelu(x, 64)
    inplanes = 64
    for blocks, planes in zip(IRESNET_STAGES[depth], STAGE_WIDTHS, strict=True):
        for index in range(blocks):
            stride = 2 if index == 0 else 1
            x = _basic_block(g, x, inplanes, planes, stride)
            inplanes = planes
    x = g.batch_norm(x, 512)
    x = g.node("Flatten", [x], axis=1)
    x = g.gemm(x, 512 * 7 * 7, feature_dim)
    x = g.batch_norm(x, feature_dim, out=output_name)
    return g.model(
        [image_input(input_name, batch)],
        [feature_output(output_name, feature_dim, batch)],
        graph_name=f"iresnet{depth}",
    )


def _basic_block(g: GraphBuilder, x: str, inplanes: int, planes: int, stride: int) -> str:
    shortcut = x
    if stride != 1 or inplanes != planes:
        # conv1x1 with the stage's stride + BN (folded).
        shortcut = g.conv(x, inplanes, planes, 1, stride, gain=0.7)
    y = g.batch_norm(x, inplanes)
    y = g.conv(y, inplanes, planes, 3)  # + bn2 folded
    y = g.prelu(y, planes)
    y = g.conv(y, planes, planes, 3, stride, gain=_RESIDUAL_GAIN)  # + bn3 folded
    return g.node("Add", [y, shortcut])


def iresnet_parameter_count(depth: int, feature_dim: int = 512) -> int:
    """Number of float parameters of ``build_iresnet(depth)`` without building it."""
    count = 3 * 64 * 9 + 64 + 64  # stem conv + bias + PReLU
    inplanes = 64
    for blocks, planes in zip(IRESNET_STAGES[depth], STAGE_WIDTHS, strict=True):
        for index in range(blocks):
            if index == 0:
                count += inplanes * planes + planes
            count += 4 * inplanes  # pre-activation BN
            count += inplanes * planes * 9 + planes + planes  # conv1 + bias, PReLU
            count += planes * planes * 9 + planes  # conv2 + bias
            inplanes = planes
    count += 4 * 512 + 512 * 49 * feature_dim + feature_dim + 4 * feature_dim
    return count
