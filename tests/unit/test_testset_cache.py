"""The machine's test-set cache (cli/stack/testsets.py): built once, never seen half-written."""

from __future__ import annotations

import os
import subprocess
import sys

from cli.stack.testsets import default_testset
from mfr.testset.format import TestSet
from mfr.testset.synth import SYNTH_VERSION

SCALE = 0.0002  # about 400 images: a second to build
BUILD = ("from cli.stack.testsets import default_testset; "
         f"print(default_testset({SCALE}, seed=5))")


def test_two_processes_building_the_same_test_set_at_once_both_get_a_whole_one(tmp_path):
    env = {**os.environ, "MFR_CACHE_DIR": str(tmp_path)}
    builds = [subprocess.Popen([sys.executable, "-c", BUILD], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
              for _ in range(2)]
    outputs = [build.communicate(timeout=120) for build in builds]
    assert [build.returncode for build in builds] == [0, 0], outputs
    folders = {out.strip() for out, _err in outputs}
    assert len(folders) == 1
    testset = TestSet(folders.pop())
    assert testset.id
    # Each builder's private copy is gone; only the finished folder is left.
    assert sorted(p.name for p in (tmp_path / "testsets").iterdir()) == [
        f"synth-v{SYNTH_VERSION}-scale{SCALE:g}-seed5"]


def test_a_folder_left_by_an_interrupted_build_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("MFR_CACHE_DIR", str(tmp_path))
    broken = tmp_path / "testsets" / f"synth-v{SYNTH_VERSION}-scale{SCALE:g}-seed5"
    broken.mkdir(parents=True)
    (broken / "shard-00000.bin").write_bytes(b"half")
    folder = default_testset(SCALE, seed=5)
    assert folder == broken
    assert not (folder / "shard-00000.bin").exists()
    TestSet(folder)
    assert len(list((tmp_path / "testsets").iterdir())) == 1
