"""The GPU image's build-time check (scripts/check_cuda_libs.py): fails naming what a CUDA
library lacks, and passes over the driver's libcuda, which the host provides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_cuda_libs.py"
# A stand-in for ldd: what each library "needs" comes from a file beside it.
FAKE_LDD = """#!/bin/sh
echo "	linux-vdso.so.1 (0x00007ffd)"
cat "$1.needs"
"""


def _site(tmp_path: Path, provider_needs: str) -> tuple[Path, dict]:
    site = tmp_path / "site-packages"
    libs = {site / "onnxruntime/capi/libonnxruntime_providers_cuda.so": provider_needs,
            site / "torch/lib/libtorch_cuda.so":
                "	libcudart.so.13 => /site/nvidia/cuda_runtime/lib/libcudart.so.13 (0x1)\n"
                "	libcuda.so.1 => not found\n",
            site / "torch/lib/libtorch_cpu.so": "	libz.so.1 => not found\n"}  # not CUDA's
    for lib, needs in libs.items():
        lib.parent.mkdir(parents=True, exist_ok=True)
        lib.write_bytes(b"\x7fELF")
        Path(f"{lib}.needs").write_text(needs)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ldd").write_text(FAKE_LDD)
    (bin_dir / "ldd").chmod(0o755)
    return site, {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _check(site: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(site)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_missing_cuda_library_fails_the_build_naming_it(tmp_path):
    site, env = _site(tmp_path, "	libcublas.so.13 => not found\n	libcuda.so.1 => not found\n")
    result = _check(site, env)
    assert result.returncode == 1
    assert ("onnxruntime/capi/libonnxruntime_providers_cuda.so needs libcublas.so.13: "
            "not found") in result.stderr
    assert "libcuda" not in result.stderr and "libtorch_cpu" not in result.stderr


def test_only_the_drivers_libcuda_missing_passes(tmp_path):
    site, env = _site(tmp_path, "	libcublas.so.13 => /x/libcublas.so.13 (0x1)\n"
                                "	libcuda.so.1 => not found\n")
    result = _check(site, env)
    assert result.returncode == 0, result.stderr
    assert "2 CUDA libraries resolve" in result.stdout


def test_no_cuda_library_at_all_fails(tmp_path):
    result = _check(tmp_path, dict(os.environ))
    assert result.returncode == 1 and "no CUDA library" in result.stderr
