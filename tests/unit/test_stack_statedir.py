"""One ``mfr up`` per state directory (cli/stack/statedir.py), and children started from a
thread that lives as long as the stack (PR_SET_PDEATHSIG follows the forking thread)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from cli.stack.statedir import RECORD_NAME, StateDirInUse, StateDirLock
from cli.stack.supervisor import Child, Stack, StackConfig


@pytest.fixture
def sleeper():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def _crash(lock: StateDirLock) -> None:
    """What a SIGKILL does to the supervisor: the lock goes, the record stays (less the
    supervisor, here the test itself, which lives on)."""
    os.close(lock._fd)
    lock._fd = None
    path = lock.state_dir / RECORD_NAME
    entries = json.loads(path.read_text())
    path.write_text(json.dumps([e for e in entries if e["pid"] != os.getpid()]))


def test_a_second_stack_is_refused_while_the_first_holds_the_state_directory(tmp_path, sleeper):
    first = StateDirLock(tmp_path)
    first.acquire()
    first.record([("dispatcher", sleeper.pid)])
    with pytest.raises(StateDirInUse) as refused:
        StateDirLock(tmp_path).acquire()
    assert refused.value.code == "state_dir_in_use"
    message = refused.value.message
    assert f"mfr up (pid {os.getpid()}), dispatcher (pid {sleeper.pid})" in message
    assert f"kill {os.getpid()}" in message and "--state-dir" in message
    first.release()
    assert not (tmp_path / RECORD_NAME).exists()
    StateDirLock(tmp_path).acquire()  # free again


def test_orphans_of_a_killed_supervisor_are_named_and_then_the_start_goes_ahead(tmp_path,
                                                                                 sleeper):
    lock = StateDirLock(tmp_path)
    lock.acquire()
    lock.record([("dispatcher", sleeper.pid)])
    _crash(lock)
    with pytest.raises(StateDirInUse) as refused:
        StateDirLock(tmp_path).acquire()
    assert f"still running: dispatcher (pid {sleeper.pid}); end them (`kill {sleeper.pid}`)" \
        in refused.value.message
    sleeper.kill()
    sleeper.wait()
    again = StateDirLock(tmp_path)
    again.acquire()
    assert again.held


def test_a_reused_pid_or_a_broken_record_does_not_block(tmp_path, sleeper):
    (tmp_path / RECORD_NAME).write_text(json.dumps(
        [{"name": "dispatcher", "pid": sleeper.pid, "started": 1.0}]))  # another process
    assert StateDirLock(tmp_path).survivors() == []
    (tmp_path / RECORD_NAME).write_text("[{")
    lock = StateDirLock(tmp_path)
    lock.acquire()
    assert [r.name for r in lock.survivors()] == ["mfr up"]


def test_ensure_free_leaves_nothing_held(tmp_path):
    StateDirLock(tmp_path).ensure_free()  # no lock file yet: nothing to check
    lock = StateDirLock(tmp_path)
    lock.acquire()
    with pytest.raises(StateDirInUse):
        StateDirLock(tmp_path).ensure_free()
    lock.release()
    StateDirLock(tmp_path).ensure_free()
    StateDirLock(tmp_path).acquire()


def test_a_child_restarted_from_a_thread_outlives_that_thread_and_is_recorded(tmp_path):
    stack = Stack(StackConfig(state_dir=tmp_path), say=lambda _line: None)
    stack._lock.acquire()
    (tmp_path / "logs").mkdir()
    child = Child("steady", [sys.executable, "-c", "import time; time.sleep(60)"], {}, None)
    stack.children.append(child)
    try:
        restarter = threading.Thread(target=stack._spawn, args=(child,))
        restarter.start()
        restarter.join()
        time.sleep(0.5)  # a SIGKILL from PR_SET_PDEATHSIG would have landed by now
        assert child.process.poll() is None, "the child died with the thread that started it"
        recorded = {r.name: r.pid for r in stack._lock.survivors()}
        assert recorded == {"mfr up": os.getpid(), "steady": child.process.pid}
    finally:
        stack.stop(grace=1.0)
    assert child.process.poll() is not None
    assert not stack._lock.held
