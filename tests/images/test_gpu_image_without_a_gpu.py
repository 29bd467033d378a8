"""The GPU image on a machine without a GPU: its CUDA libraries resolve, and it refuses
GPU work instead of doing it on the CPU.

Inside ``localhost/mfr-platform-gpu:VERSION`` (``make images-gpu``, several GB: not
rebuilt by every CI run, so this skips where it was not built unless
``MFR_GPU_IMAGE_REQUIRED=1``), as its user: ``mfr embed --runtime onnxruntime-cuda``
and ``--runtime torch-cuda`` exit 2 with ``gpu_unavailable`` and write nothing;
``onnxruntime-cpu`` still embeds; the build-time library check passes again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from mfr.onnxzoo import build_tiny_model, save_model
from mfr.testset.synth import synth_testset

pytestmark = pytest.mark.images

ROOT = Path(__file__).resolve().parents[2]
USER = "10001:10001"


@pytest.fixture(scope="module")
def gpu_image() -> str:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    tag = f"localhost/mfr-platform-gpu:{version}"
    built = shutil.which("buildah") and subprocess.run(
        ["buildah", "inspect", "--type", "image", tag], capture_output=True,
        check=False).returncode == 0
    if built:
        return tag
    message = f"{tag} is not built: run `make images-gpu`"
    if os.environ.get("MFR_GPU_IMAGE_REQUIRED") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A model and a test set, readable by the image's user, mounted at /work."""
    root = tmp_path_factory.mktemp("gpu-image")
    save_model(build_tiny_model(batch=1), root / "model.onnx")
    synth_testset(root / "ts", scale=0.0002, seed=3)
    (root / "out").mkdir()
    subprocess.run(["chmod", "-R", "a+rwX", str(root)], check=True)
    return root


def _in_image(image: str, work: Path, *argv: str) -> subprocess.CompletedProcess:
    container = subprocess.run(["buildah", "from", "--pull-never", image], check=True,
                               capture_output=True, text=True).stdout.strip()
    try:
        return subprocess.run(
            ["buildah", "run", "--isolation", "chroot", "--user", USER,
             "--volume", f"{work}:/work", container, "--", *argv],
            capture_output=True, text=True, timeout=300, check=False)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


@pytest.mark.parametrize("runtime", ["onnxruntime-cuda", "torch-cuda"])
def test_a_gpu_runtime_is_refused_and_nothing_is_written(gpu_image, work, runtime):
    out = work / "out" / f"{runtime}.npy"
    result = _in_image(gpu_image, work, "mfr", "embed", "--model", "/work/model.onnx",
                       "--testset", "/work/ts", "--out", f"/work/out/{out.name}",
                       "--runtime", runtime, "--threads", "1")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "gpu_unavailable" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not out.with_name(out.name + ".parts").exists()


def test_the_cpu_runtime_still_embeds_there(gpu_image, work):
    result = _in_image(gpu_image, work, "mfr", "embed", "--model", "/work/model.onnx",
                       "--testset", "/work/ts", "--out", "/work/out/cpu.npy",
                       "--runtime", "onnxruntime-cpu", "--threads", "1", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work / "out" / "cpu.npy").stat().st_size > 0


def test_every_cuda_library_resolves_in_the_image(gpu_image, work):
    shutil.copy(ROOT / "scripts" / "check_cuda_libs.py", work / "check_cuda_libs.py")
    result = _in_image(gpu_image, work, "/opt/venv/bin/python", "/work/check_cuda_libs.py",
                       "/opt/venv/lib/python3.11/site-packages")
    assert result.returncode == 0, result.stderr
    assert "CUDA libraries resolve" in result.stdout


def test_auto_picks_no_cuda_runtime_where_there_is_no_gpu(gpu_image, work):
    """onnxruntime-gpu lists its CUDA provider here anyway: the validator's `auto` and the
    embedder worker's `auto` runtimes must not take it."""
    code = ("from services.validator.config import ModelCheckSettings; "
            "from services.embedder.runtime import runtimes_here; "
            "import onnxruntime as ort; "
            "print(ort.get_available_providers()); "
            "print(ModelCheckSettings().providers()); print(runtimes_here())")
    result = _in_image(gpu_image, work, "/opt/venv/bin/python", "-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    built_in, validator, embedder = result.stdout.strip().splitlines()[-3:]
    assert "CUDAExecutionProvider" in built_in
    assert validator == "('CPUExecutionProvider',)"
    assert "cuda" not in embedder
