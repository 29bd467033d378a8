"""ONNX models built by the project itself: IResNet shapes and tiny test models.

Seeded random float32 weights, built with ``onnx.helper`` and numpy only (no
torch, no download).
"""

from mfr.onnxzoo.graph import GraphBuilder, feature_output, image_input, save_model
from mfr.onnxzoo.iresnet import (
    IRESNET_STAGES,
    V100_LATENCY_MS,
    build_iresnet,
    iresnet_parameter_count,
)
from mfr.onnxzoo.tiny import build_tiny_model, tiny_trunk, tiny_trunk_width

__all__ = [
    "IRESNET_STAGES",
    "V100_LATENCY_MS",
    "GraphBuilder",
    "build_iresnet",
    "build_tiny_model",
    "feature_output",
    "image_input",
    "iresnet_parameter_count",
    "save_model",
    "tiny_trunk",
    "tiny_trunk_width",
]
