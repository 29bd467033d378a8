"""``mfr up``'s restart policy: back-off, crash loops, and the supervisor loop on real processes."""

from __future__ import annotations

import sys
import threading

import pytest

from cli.stack.restarts import CRASH_LOOP_EXITS, CRASH_LOOP_WINDOW_S, CrashLoop, RestartPolicy
from cli.stack.supervisor import Child, Stack, StackConfig


def test_backoff_doubles_and_a_crash_loop_is_named():
    policy = RestartPolicy("scorer-worker-0")
    delays = [policy.exited(now=t) for t in (0.0, 1.0, 3.0, 7.0)]
    assert delays == [0.5, 1.0, 2.0, 4.0]
    with pytest.raises(CrashLoop) as loop:
        policy.exited(now=15.0)
    assert "scorer-worker-0 exited 5 times within 60s" in str(loop.value)
    assert CRASH_LOOP_EXITS == 5


def test_exits_older_than_the_window_are_forgiven():
    policy = RestartPolicy("dispatcher")
    for n in range(20):  # one exit every 20 s: at most 4 within a minute, never a loop
        assert policy.exited(now=n * 20.0) <= 4.0
        policy.restarted()
    assert policy.restarts == 20
    assert len(policy.exits) == CRASH_LOOP_WINDOW_S / 20 + 1


def _stack(tmp_path, *children: tuple[str, str]) -> Stack:
    stack = Stack(StackConfig(state_dir=tmp_path), say=lambda _line: None)
    (tmp_path / "logs").mkdir()
    said: list[str] = []
    stack.say = said.append
    for name, code in children:
        child = Child(name, [sys.executable, "-c", code], {}, None)
        stack.children.append(child)
        stack._spawn(child)
    return stack, said


def test_a_child_that_dies_is_restarted_and_the_rest_carry_on(tmp_path):
    marker = tmp_path / "started-once"
    # Dies the first time, stays up the second: a crash the restart heals.
    code = (f"import os, sys, time\nif not os.path.exists({str(marker)!r}):\n"
            f"    open({str(marker)!r}, 'w').close(); sys.exit(7)\ntime.sleep(60)")
    stack, said = _stack(tmp_path, ("flaky", code), ("steady", "import time; time.sleep(60)"))
    steady = stack.children[1].process
    stop = threading.Event()
    result = []
    loop = threading.Thread(target=lambda: result.append(stack.wait(stop.is_set)))
    loop.start()
    try:
        for _ in range(100):
            if any(line.startswith("flaky restarted") for line in said):
                break
            stop.wait(0.1)
        assert said[0].startswith("flaky exited with 7; restarting it in 0.5s")
        assert said[1] == "flaky restarted (restart 1)"
        assert stack.children[0].process.poll() is None
        assert stack.children[1].process is steady and steady.poll() is None
    finally:
        stop.set()
        loop.join(5)
        for child in stack.children:
            child.process.kill()
    assert result == [0]


def test_a_crash_looping_child_stops_the_stack_with_its_name(tmp_path):
    stack, said = _stack(tmp_path, ("broken", "import sys; sys.exit(3)"))
    try:
        assert stack.wait(lambda: False) == 1
    finally:
        stack.children[0].process.kill()
    assert said[-1].startswith("broken exited 5 times within 60s; not restarting it again; "
                               "stopping the platform")
    assert sum(line.startswith("broken restarted") for line in said) == 4
