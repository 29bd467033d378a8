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
