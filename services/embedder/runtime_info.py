"""What ran a model, as recorded with its features: shared by the runtimes
(services/embedder/runtime.py, torch_runtime.py), which import it, never each other
at module level."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuntimeInfo:
    """What ran a model: recorded with its features, shown with its scores."""

    name: str  # "onnxruntime-cpu", "onnxruntime-cuda", "torch-cuda", "torch-cpu"
    version: str  # e.g. "onnxruntime 1.32.0"
    device: str  # for people, e.g. "CPU, 2 threads"
    fallback_reason: str = ""  # why this is not the runtime the challenge names

    def as_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "device": self.device,
                "fallback_reason": self.fallback_reason}
