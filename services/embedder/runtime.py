"""The runtimes a model runs on: onnxruntime (the reference: CPU, or CUDA with I/O binding
where onnxruntime-gpu is installed) and torch (services/embedder/torch_runtime.py).

CPU sessions are configured on purpose rather than left to defaults: intra-op
threads = the physical cores this process may use (affinity and cgroup quota
respected, SMT siblings not counted: they add little to convolutions and
their contention costs more), inter-op threads = 1 (the graph is a chain),
sequential execution, all graph optimisations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from mfr.cpus import physical_cores
from mfr.errors import GpuUnavailable, InvalidInput
from mfr.gpu import CPU, CUDA, CUDA_OPTIONS, gpu_present
from services.embedder.runtime_info import RuntimeInfo


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


class Runner:
    """One inference session; ``run(batch)`` maps float32 [n, 3, 112, 112] to features [n, D]."""

    def __init__(self, model: bytes, device: str = "auto", threads: int | None = None) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        use_cuda = device == "cuda" or (device == "auto" and CUDA in available)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if use_cuda:
            options.use_deterministic_compute = True
            providers = [(CUDA, CUDA_OPTIONS), CPU]
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
        if use_cuda and self.provider != CUDA:
            # onnxruntime falls back to the CPU without a word when its CUDA provider does
            # not load (no device, no driver, a library of another CUDA major): refuse.
            raise GpuUnavailable(
                f"onnxruntime-cuda asked for, but onnxruntime {ort.__version__} runs on "
                f"{self.provider} here (providers built in: {', '.join(available)}): no "
                "usable GPU; refused rather than run on the CPU")
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise InvalidInput("the model must have one input and one output",
                               code="model_invalid")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self.binding = self.session.io_binding() if self.provider == CUDA else None
        if self.provider == CUDA:
            name, device_text = "onnxruntime-cuda", "CUDA device 0 (I/O binding)"
        else:
            name, device_text = "onnxruntime-cpu", f"CPU, {self.threads} threads"
        self.info = RuntimeInfo(name, f"onnxruntime {ort.__version__}", device_text)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.binding is None:
            return self.session.run([self.output_name], {self.input_name: batch})[0]
        # CUDA: copy the batch in, keep the output on the device until it is
        # fetched, so onnxruntime allocates nothing per call on the host side.
        self.binding.bind_cpu_input(self.input_name, batch)
        self.binding.bind_output(self.output_name, "cuda", 0)
        self.session.run_with_iobinding(self.binding)
        return self.binding.copy_outputs_to_cpu()[0]


def open_runtime(model: bytes, runtime: str, threads: int | None = None):
    """A runner for ``runtime`` (a challenge's ``[embedding] runtime``): ``run(batch)`` and
    ``info``. torch runs the graph when its converter covers every operator, else
    onnxruntime on the same kind of device does (the reason is in ``info``)."""
    if runtime.startswith("torch-"):
        try:
            from services.embedder.torch_runtime import TorchRunner, Unconvertible
        except ImportError:
            if runtime.endswith("-cuda"):
                raise GpuUnavailable(f"{runtime} needs torch with CUDA, which is not installed "
                                     "here; refused rather than run on the CPU") from None
            raise InvalidInput(f"{runtime} needs torch, which is not installed here",
                               code="runtime_unavailable") from None

        device = runtime.removeprefix("torch-")
        try:
            return TorchRunner(model, device, threads)
        except Unconvertible as exc:
            # onnxruntime on the same kind of device: a GPU runtime never ends on the CPU.
            fallback = Runner(model, device=device, threads=threads)
            fallback.info = RuntimeInfo(fallback.info.name, fallback.info.version,
                                        fallback.info.device, str(exc))
            return fallback
    return Runner(model, device=runtime.removeprefix("onnxruntime-"), threads=threads)


def _ort_cuda() -> bool:
    import onnxruntime as ort

    return CUDA in ort.get_available_providers()


def gpu_problem(runtimes: tuple[str, ...]) -> str | None:
    """Why this machine cannot run the CUDA runtimes among ``runtimes`` (None: it can, or
    none is named): a worker's readiness."""
    cuda = [r for r in runtimes if r.endswith("-cuda")]
    if not cuda:
        return None
    if not gpu_present():
        return f"{', '.join(cuda)} named, but there is no usable GPU here"
    if "onnxruntime-cuda" in cuda and not _ort_cuda():
        return "onnxruntime-cuda named, but this onnxruntime has no CUDAExecutionProvider"
    if "torch-cuda" in cuda and not _torch_installed():
        return "torch-cuda named, but torch is not installed here"
    return None


def _torch_installed() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def runtimes_here() -> tuple[str, ...]:
    """The runtimes this machine can run, in the order a worker serves them: a CUDA one
    only with a GPU (an onnxruntime built with CUDA lists its provider on any machine)."""
    found = ["onnxruntime-cpu"]
    if _ort_cuda() and gpu_present():
        found.append("onnxruntime-cuda")
    try:
        import torch
    except ImportError:
        return tuple(found)
    if torch.cuda.is_available():
        found.append("torch-cuda")
    found.append("torch-cpu")
    return tuple(found)
