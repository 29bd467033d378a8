"""How onnxruntime runs a participant's model on a GPU, for the validator and the embedder alike.

Strict float32, as the reference evaluation ran (V100s, no TF32): TF32 off (Ampere and
later would round matmul and convolution inputs to 10-bit mantissas), cuDNN's default
convolution algorithm instead of an exhaustive benchmark that may choose another one on
the next run, and the session's deterministic compute (docs/embedder.md, "Runtimes").
torch's runtime sets the same (services/embedder/torch_runtime.py).
"""

from __future__ import annotations

from pathlib import Path

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
CUDA_OPTIONS = {"device_id": 0, "use_tf32": 0, "cudnn_conv_algo_search": "DEFAULT"}


def gpu_present() -> bool:
    """A CUDA device this process can use: torch's word where torch is installed, else the
    driver's device nodes (onnxruntime lists its CUDA provider on any machine it was built
    for, GPU or not)."""
    try:
        import torch
    except ImportError:
        return any(Path("/dev").glob("nvidia[0-9]*"))
    return torch.cuda.is_available()
