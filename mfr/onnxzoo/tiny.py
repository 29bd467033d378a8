"""Tiny valid face-recognition-shaped models: 112x112 input, >= 8 nodes, milliseconds to run.

They pass every rule of the reference checker on any machine, so tests and
demos can build on them: the validator's corpus derives its broken variants
from here (``tiny_trunk`` appends the same layers to any graph), and the
embedder can use them as fast stand-ins.
"""

from __future__ import annotations

import onnx

from mfr.onnxzoo.graph import GraphBuilder, feature_output, image_input


def tiny_trunk_width(width: int = 8, side: int = 112) -> int:
    """Width of ``tiny_trunk``'s flattened output for a ``side`` x ``side`` input."""
    return 2 * width * (side // 16) ** 2


def tiny_trunk(g: GraphBuilder, x: str, *, width: int = 8, normalise_inside: bool = False) -> str:
    """Append conv4x4/4 -> BN -> PReLU -> conv4x4/4 -> BN -> PReLU -> flatten to ``g``.

    Returns the flattened ``[batch, tiny_trunk_width(width)]`` tensor (6 or 8 nodes).
    """
    if normalise_inside:
        x = g.normalise_input(x)
    x = g.conv(x, 3, width, 4, 4)
    x = g.prelu(g.batch_norm(x, width), width)
    x = g.conv(x, width, 2 * width, 4, 4)
    x = g.prelu(g.batch_norm(x, 2 * width), 2 * width)
    return g.node("Flatten", [x], axis=1)


def build_tiny_model(*, feature_dim: int = 128, seed: int = 0, width: int = 8,
                     normalise_inside: bool = False, batch: int | str = "None",
                     input_name: str = "input", output_name: str = "features") -> onnx.ModelProto:
    """``tiny_trunk`` + FC + BN: ``[batch, 3, 112, 112]`` float32 in, ``[batch, feature_dim]`` out.

    9 nodes (11 with ``normalise_inside``, whose ``Sub``/``Mul`` names make the
    checker feed raw pixels). ``batch`` fixes the batch dimension when an int.
    """
    g = GraphBuilder(seed)
    x = tiny_trunk(g, input_name, width=width, normalise_inside=normalise_inside)
    x = g.gemm(x, tiny_trunk_width(width), feature_dim)
    g.batch_norm(x, feature_dim, out=output_name)
    return g.model(
        [image_input(input_name, batch)],
        [feature_output(output_name, feature_dim, batch)],
        graph_name="tiny",
    )
