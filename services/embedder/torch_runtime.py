"""The ONNX graph executed by torch, on CUDA (or the CPU): the embedder's GPU path.

The graph's nodes run in order through :mod:`services.embedder.torch_ops`, with
the weights moved to the device once. float32 throughout, TF32 off (a float32
model stays a float32 model) and cuDNN in deterministic mode with benchmarking
off, so every worker on the same GPU model, driver and torch picks the same
kernels and gives the same bits. Integer tensors (shape arithmetic) stay on the
CPU. A graph with an operator the converter lacks raises :class:`Unconvertible`
when it is built; ``open_runtime`` then runs the model on onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from mfr.cpus import physical_cores
from mfr.errors import GpuUnavailable
from services.embedder.runtime_info import RuntimeInfo
from services.embedder.torch_ops import OPS, Unconvertible

__all__ = ["TorchRunner", "Unconvertible"]


def _attributes(node: onnx.NodeProto) -> dict:
    values = {}
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        elif isinstance(value, onnx.GraphProto | list) and attribute.type in (
                onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            raise Unconvertible(f"{node.op_type} has a subgraph")
        values[attribute.name] = value
    return values


class _Graph:
    """The model as (node, attributes) steps over a table of named tensors."""

    def __init__(self, model: onnx.ModelProto, device: torch.device) -> None:
        if any(domain.domain not in ("", "ai.onnx") for domain in model.opset_import):
            raise Unconvertible("the model imports a non-standard operator domain")
        graph = model.graph
        self.constants: dict[str, torch.Tensor] = {}
        for tensor in graph.initializer:
            self.constants[tensor.name] = self._tensor(numpy_helper.to_array(tensor), device)
        self.steps: list[tuple[onnx.NodeProto, dict]] = []
        for node in graph.node:
            attrs = _attributes(node)
            if node.op_type == "Constant":
                if "value" not in attrs:
                    raise Unconvertible("a Constant without a tensor value")
                self.constants[node.output[0]] = self._tensor(np.asarray(attrs["value"]), device)
            elif node.op_type not in OPS:
                raise Unconvertible(f"operator {node.op_type} is not converted")
            else:
                self.steps.append((node, attrs))
        initialised = {t.name for t in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in initialised]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise Unconvertible("the model must have one input and one output")
        self.input, self.output = inputs[0], graph.output[0].name

    @staticmethod
    def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
        tensor = torch.from_numpy(np.array(array, copy=True))
        return tensor.to(device) if tensor.is_floating_point() else tensor

    def run(self, x: torch.Tensor) -> torch.Tensor:
        values = dict(self.constants)
        values[self.input] = x
        for node, attrs in self.steps:
            inputs = [values[name] if name else None for name in node.input]
            for name, value in zip(node.output, OPS[node.op_type](inputs, attrs), strict=False):
                values[name] = value
        return values[self.output]


class TorchRunner:
    """``run(batch)``: float32 [n, 3, 112, 112] to features [n, D], on torch."""

    def __init__(self, model: bytes, device: str = "cuda", threads: int | None = None) -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise GpuUnavailable(f"torch-cuda asked for, but torch {torch.__version__} sees no "
                                 "CUDA device here; refused rather than run on the CPU")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        self.device = torch.device(device)
        if device == "cpu":
            torch.set_num_threads(threads or physical_cores())
        self.graph = _Graph(onnx.load_model_from_string(model), self.device)
        self.on_gpu = device == "cuda"
        where = (torch.cuda.get_device_name(self.device) if self.on_gpu
                 else f"CPU, {torch.get_num_threads()} threads")
        self.info = RuntimeInfo(f"torch-{device}", f"torch {torch.__version__}", where)
        self._check()

    def _check(self) -> None:
        """One batch through the graph now, so a conversion gap shows at load, not mid-shard."""
        try:
            self.run(np.zeros((2, 3, 112, 112), dtype=np.float32))
        except Unconvertible:
            raise
        except Exception as exc:  # noqa: BLE001 - a converted op that fails: not ours to run
            raise Unconvertible(f"the converted graph fails: {exc}") from None

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch)
        if self.on_gpu:
            x = x.pin_memory().to(self.device, non_blocking=True)
        out = self.graph.run(x)
        return out.float().cpu().numpy()
