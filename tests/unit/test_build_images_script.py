"""`make images` (scripts/build-images.sh) says what is missing, not a stack trace."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "build-images.sh"


def _path_without(tmp_path: Path, *missing: str) -> str:
    """A PATH with the tools the script uses, less ``missing``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "sed", "head", "git", "id", "mktemp", "date", "rm", "cat", "cp",
                 "tail", "printf", "buildah", "debootstrap"):
        found = shutil.which(tool)
        if found and tool not in missing:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def _run(tmp_path, *args, missing=()):
    env = {**os.environ, "PATH": _path_without(tmp_path, *missing)}
    return subprocess.run([shutil.which("bash"), str(SCRIPT), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_without_buildah_it_says_how_to_install_it(tmp_path):
    result = _run(tmp_path, "cpu", missing=("buildah",))
    assert result.returncode == 1
    assert "buildah is not installed" in result.stderr
    assert "apt-get install buildah" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_kind_is_refused(tmp_path):
    result = _run(tmp_path, "tpu")
    assert result.returncode == 2
    assert "unknown kind 'tpu' (cpu or gpu)" in result.stderr


FAKE_BUILDAH = """#!/bin/sh
case "$1" in
  inspect) exit 1 ;;  # no image here yet
  pull) echo "Error: initializing source docker://python:3.11-slim-bookworm: pinging \
container registry registry-1.docker.io: connection refused" >&2; exit 125 ;;
esac
exit 0
"""
FAKE_DEBOOTSTRAP = """#!/bin/sh
echo "I: Retrieving InRelease"
echo "E: Failed getting release file http://deb.debian.org/debian/dists/bookworm/Release"
exit 1
"""


def _with_fakes(tmp_path, debootstrap: bool):
    path = _path_without(tmp_path, "buildah", "debootstrap")
    for name, text in (("buildah", FAKE_BUILDAH),
                       *((("debootstrap", FAKE_DEBOOTSTRAP),) if debootstrap else ())):
        fake = tmp_path / "bin" / name
        fake.write_text(text)
        fake.chmod(0o755)
    env = {**os.environ, "PATH": path}
    env.pop("MFR_BASE_IMAGE", None)
    return subprocess.run([shutil.which("bash"), str(SCRIPT), "cpu"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_base_that_can_be_neither_pulled_nor_built_names_the_step_and_the_reason(tmp_path):
    result = _with_fakes(tmp_path, debootstrap=True)
    assert result.returncode == 1, result.stderr
    assert "cannot be pulled (connection refused)" in result.stderr
    if os.getuid() == 0:
        assert "step 'base': debootstrap of bookworm from http://deb.debian.org/debian " \
               "failed" in result.stderr
        assert "E: Failed getting release file" in result.stderr  # the log's tail
    else:
        assert "step 'base': debootstrap needs root" in result.stderr
    assert "Traceback" not in result.stderr and "step 'build'" not in result.stderr


def test_a_base_that_cannot_be_pulled_without_debootstrap_says_what_to_install(tmp_path):
    result = _with_fakes(tmp_path, debootstrap=False)
    assert result.returncode == 1
    assert "step 'base'" in result.stderr and "debootstrap is not installed" in result.stderr
    assert "apt-get install debootstrap" in result.stderr and "MFR_BASE_IMAGE" in result.stderr
