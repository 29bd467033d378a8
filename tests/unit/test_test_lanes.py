"""`make test`'s two lanes (scripts/test-lanes.sh): every test in exactly one, and the
exit status a CI reads."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "test-lanes.sh"
# A stand-in for the interpreter: prints a pytest-like summary for the lane its -m names,
# and exits with that lane's status from the environment.
FAKE_PYTHON = """#!/usr/bin/env bash
case "$4" in
  "not ("*) lane=quick ;;
  *) lane=stack ;;
esac
echo "args: $*"
var=${lane^^}_RC
echo "=== 3 passed, 1 deselected in 0.1s ==="
exit "${!var}"
"""


def test_the_lanes_split_the_suite_by_one_expression_and_its_negation():
    """`E and not images` and `not (E) and not images`: no test runs twice or never (the
    images tier aside), whatever E selects. A split that could drop tests silently
    (pytest-xdist did, here) is what this guards against."""
    text = SCRIPT.read_text()
    stack = re.search(r'\[stack\]="(.*)"', text).group(1)
    quick = re.search(r'\[quick\]="(.*)"', text).group(1)
    selection = stack.removesuffix(" and not images")
    assert stack.endswith(" and not images") and selection
    assert quick == f"not {selection} and not images"
    assert selection.startswith("(") and selection.endswith(")")


def _run(tmp_path, stack_rc: int, quick_rc: int):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "STACK_RC": str(stack_rc), "QUICK_RC": str(quick_rc),
           "TMPDIR": str(tmp_path)}
    return subprocess.run([shutil.which("bash"), str(SCRIPT), str(fake), "-q", "tests/x"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("stack_rc", "quick_rc", "expected"), [
    (0, 0, 0),
    (1, 0, 1),  # a failing test in either lane fails make test
    (0, 1, 1),
    (5, 0, 0),  # PYTEST_ARGS selected only the other lane's tests
    (5, 5, 5),  # nothing ran at all: pytest's own "no tests" status
    (2, 0, 1),  # interrupted
])
def test_the_exit_status_is_a_failure_when_either_lane_fails(tmp_path, stack_rc, quick_rc,
                                                             expected):
    result = _run(tmp_path, stack_rc, quick_rc)
    assert result.returncode == expected, result.stdout + result.stderr
    assert f"stack lane: 3 passed, 1 deselected in 0.1s (exit {stack_rc})" in result.stdout
    assert f"quick lane: 3 passed, 1 deselected in 0.1s (exit {quick_rc})" in result.stdout


def test_each_lane_gets_the_callers_arguments_and_prefixes_its_lines(tmp_path):
    result = _run(tmp_path, 0, 0)
    lines = result.stdout.splitlines()
    assert any(line.startswith("[stack] args: -m pytest -m (e2e or slow) and not images "
                               "--durations=10 -q tests/x") for line in lines), lines
    assert any(line.startswith("[quick] args: -m pytest -m not (e2e or slow)")
               for line in lines), lines
