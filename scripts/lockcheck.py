"""Does a lock file still satisfy pyproject.toml's ranges?

``make lock`` writes requirements/*.lock from pyproject.toml (docs/dependencies.md);
tests/unit/test_lock.py calls :func:`unmet` for each lock so that a range changed
without ``make lock`` fails the suite with the package named, before an install
from a stale lock can hide it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# The interpreter every lock is resolved for (the Makefile's --python-version).
LOCK_ENVIRONMENT = {**default_environment(), "python_version": "3.11",
                    "python_full_version": "3.11.0", "sys_platform": "linux",
                    "platform_system": "Linux", "platform_machine": "x86_64",
                    "implementation_name": "cpython", "os_name": "posix"}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@dataclass(frozen=True)
class Lock:
    path: Path
    pins: dict[str, str]  # canonical name -> exact version
    unhashed: tuple[str, ...]  # pins without a --hash line

    @classmethod
    def read(cls, path: Path) -> Lock:
        pins: dict[str, str] = {}
        unhashed: list[str] = []
        current = None
        for line in path.read_text().splitlines():
            match = _PIN.match(line)
            if match:
                if current is not None and current[1] is False:
                    unhashed.append(current[0])
                current = [canonicalize_name(match[1]), False]
                pins[current[0]] = match[2]
            elif current is not None and "--hash=sha256:" in line:
                current[1] = True
        if current is not None and current[1] is False:
            unhashed.append(current[0])
        return cls(path, pins, tuple(unhashed))


def project_requirements(pyproject: Path, extras: list[str]) -> list[Requirement]:
    """The base dependencies plus the named extras, as pyproject.toml states them."""
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def input_requirements(path: Path) -> list[Requirement]:
    """Requirements of a requirements/*.in file (comments and blanks skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def unmet(lock: Lock, requirements: list[Requirement]) -> list[str]:
    """One sentence per requirement the lock does not satisfy; empty when it does."""
    problems = []
    for requirement in requirements:
        if requirement.marker and not requirement.marker.evaluate(LOCK_ENVIRONMENT):
            continue
        name = canonicalize_name(requirement.name)
        version = lock.pins.get(name)
        if version is None:
            problems.append(f"{name}: pyproject.toml asks for {requirement}, "
                            f"{lock.path.name} has no {name}: run `make lock`")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{name}: pyproject.toml asks for {requirement}, "
                            f"{lock.path.name} pins {name}=={version}: run `make lock`")
    return problems
