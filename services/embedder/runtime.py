"""The onnxruntime session the embedder runs: CUDA with I/O binding when present, else CPU.

CPU sessions are configured on purpose rather than left to defaults: intra-op
threads = the physical cores this process may use (affinity and cgroup quota
respected, SMT siblings not counted: they add little to convolutions and
their contention costs more), inter-op threads = 1 (the graph is a chain),
sequential execution, all graph optimisations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from mfr.cpus import physical_cores
from mfr.errors import InvalidInput

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def load_model_bytes(path: str | Path) -> bytes:
    """The model's bytes, with a fixed batch dimension made dynamic (as the validator does)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read model {path}: {exc.strerror}", code="model_unreadable") \
            from None
    return dynamic_batch(data)


def dynamic_batch(data: bytes) -> bytes:
    from mfr.modelcheck.rules import make_batch_dynamic

    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same answer
        raise InvalidInput(f"not an ONNX model: {exc}", code="model_invalid") from None
    if make_batch_dynamic(model) is None:
        return data
    return model.SerializeToString()


@dataclass(frozen=True)
class RuntimeInfo:
    provider: str  # the execution provider actually used
    threads: int  # intra-op threads (CPU); 0 on CUDA
    device: str  # for people and reports

    def as_dict(self) -> dict:
        return {"provider": self.provider, "threads": self.threads, "device": self.device}


class Runner:
    """One inference session; ``run(batch)`` maps float32 [n, 3, 112, 112] to features [n, D]."""

    def __init__(self, model: bytes, device: str = "auto", threads: int | None = None) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        use_cuda = device == "cuda" or (device == "auto" and CUDA in available)
        if use_cuda and CUDA not in available:
            raise InvalidInput("device 'cuda' asked for, but this onnxruntime has no "
                               "CUDAExecutionProvider (install onnxruntime-gpu)", code="no_gpu")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if use_cuda:
            providers = [(CUDA, {"device_id": 0}), CPU]
            self.threads = 0
        else:
            self.threads = threads or physical_cores()
            options.intra_op_num_threads = self.threads
            providers = [CPU]
        try:
            self.session = ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many kinds
            raise InvalidInput(f"onnxruntime cannot load the model: {exc}",
                               code="model_invalid") from None
        self.provider = self.session.get_providers()[0]
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise InvalidInput("the model must have one input and one output",
                               code="model_invalid")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self.binding = self.session.io_binding() if self.provider == CUDA else None
        if self.provider == CUDA:
            device_text = f"CUDA device 0 (onnxruntime {ort.__version__}, I/O binding)"
        else:
            device_text = f"CPU, {self.threads} threads (onnxruntime {ort.__version__})"
        self.info = RuntimeInfo(self.provider, self.threads, device_text)

    @property
    def on_gpu(self) -> bool:
        return self.binding is not None

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.binding is None:
            return self.session.run([self.output_name], {self.input_name: batch})[0]
        # CUDA: copy the batch in, keep the output on the device until it is
        # fetched, so onnxruntime allocates nothing per call on the host side.
        self.binding.bind_cpu_input(self.input_name, batch)
        self.binding.bind_output(self.output_name, "cuda", 0)
        self.session.run_with_iobinding(self.binding)
        return self.binding.copy_outputs_to_cpu()[0]
