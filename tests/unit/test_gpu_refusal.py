"""A CUDA runtime on a machine without a usable GPU is refused (``gpu_unavailable``: the
platform's failure), never run on the CPU; on a GPU, onnxruntime runs strict float32.

This machine has no GPU and onnxruntime's CPU build: asked for its CUDA provider,
onnxruntime silently gives a CPU session, exactly what the GPU image does on a node
whose CUDA provider cannot load. The checks after load are what refuses it.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from mfr.errors import GpuUnavailable, InvalidInput
from mfr.gpu import CUDA, gpu_present
from mfr.onnxzoo import build_tiny_model, save_model
from mfr.testset.synth import synth_testset
from services.embedder.runtime import Runner, gpu_problem, open_runtime, runtimes_here
from services.validator.sandbox import GIB, SandboxLimits
from services.validator.validator import Validator, ValidatorOptions

pytestmark = pytest.mark.skipif(gpu_present(), reason="this machine has a GPU")


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return build_tiny_model(batch=1).SerializeToString()


@pytest.mark.parametrize("runtime", ["onnxruntime-cuda", "torch-cuda"])
def test_a_cuda_runtime_without_a_gpu_is_refused_not_run_on_the_cpu(model_bytes, runtime):
    with pytest.raises(GpuUnavailable) as refused:
        open_runtime(model_bytes, runtime, threads=1)
    assert refused.value.code == "gpu_unavailable"
    assert "refused rather than run on the CPU" in refused.value.message
    # The CPU runtime still works here.
    runner = open_runtime(model_bytes, "onnxruntime-cpu", threads=1)
    assert runner.run(np.zeros((1, 3, 112, 112), np.float32)).shape[0] == 1


def test_a_worker_drains_no_cuda_queue_and_is_not_ready_for_one():
    assert not any(r.endswith("-cuda") for r in runtimes_here())
    assert "no usable GPU" in gpu_problem(("onnxruntime-cpu", "onnxruntime-cuda"))
    assert gpu_problem(("onnxruntime-cpu",)) is None


@pytest.mark.parametrize("runtime", ["onnxruntime-cuda", "torch-cuda"])
def test_mfr_embed_with_a_cuda_runtime_exits_with_the_code_and_writes_nothing(
        tmp_path, runtime):
    model = tmp_path / "model.onnx"
    save_model(build_tiny_model(batch=1), model)
    testset = synth_testset(tmp_path / "ts", scale=0.0002, seed=3)
    out = tmp_path / "out" / "features.npy"
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "embed", "--model", str(model), "--testset",
         str(testset.root), "--out", str(out), "--runtime", runtime, "--threads", "1"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert "gpu_unavailable" in result.stderr and "Traceback" not in result.stderr
    assert not out.parent.exists()


def test_the_validator_refuses_to_time_a_gpu_latency_on_the_cpu(tmp_path):
    """Providers CUDA first (as `auto` picks where onnxruntime-gpu is installed): a session
    that fell back to the CPU is the platform's failure, not the model's rejection."""
    model = tmp_path / "model.onnx"
    save_model(build_tiny_model(batch=1), model)
    limits = SandboxLimits(memory_bytes=4 * GIB, wall_seconds=60, threads=1,
                           providers=(CUDA, "CPUExecutionProvider"))
    checker = Validator.create(tmp_path, latency_factor=1000.0,
                               options=ValidatorOptions(limits=limits))
    from mfr.challenge import load_challenge

    with pytest.raises(GpuUnavailable) as refused:
        checker.validate(model, load_challenge().track("A"))
    assert "did not load" in refused.value.message


def test_a_cuda_session_is_strict_float32(model_bytes, monkeypatch):
    """What the session is created with: TF32 off, cuDNN's default algorithm, deterministic
    compute (the device check measures what they cost)."""
    made = {}
    real = ort.InferenceSession

    def record(model, sess_options=None, providers=None, **kwargs):
        made.update(options=sess_options, providers=providers)
        return real(model, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", record)
    with pytest.raises(GpuUnavailable):
        Runner(model_bytes, device="cuda")
    name, options = made["providers"][0]
    assert name == CUDA
    assert options["use_tf32"] == 0 and options["cudnn_conv_algo_search"] == "DEFAULT"
    assert made["options"].use_deterministic_compute


def test_a_broken_model_is_still_the_models_own_failure():
    """The refusal is for the machine's failures only."""
    with pytest.raises(InvalidInput) as failed:
        open_runtime(b"not an onnx model", "onnxruntime-cpu", threads=1)
    assert failed.value.code == "model_invalid"
