"""One ``mfr up`` per state directory, and none beside the processes of an earlier one.

Two stacks on one state directory would share PostgreSQL's data directory and
SeaweedFS's volumes, and the second one's services would come up on other ports
than the first one's still hold. So the supervisor holds an exclusive lock
(``flock``) on ``STATE_DIR/supervisor.lock`` for its life (the kernel lets go of
it however the supervisor dies), and records its own pid and its children's in
``STATE_DIR/processes.json``: a start refuses while the lock is held, or while a
recorded process is still alive (its children must die with it, but one that
did not, or one of an older version, would hold the ports and files). A pid
is recorded with its start time, so a pid the kernel gave to another process
since does not count.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from mfr.errors import MfrError

LOCK_NAME = "supervisor.lock"
RECORD_NAME = "processes.json"
SUPERVISOR = "mfr up"


class StateDirInUse(MfrError):
    code = "state_dir_in_use"


@dataclass(frozen=True)
class Recorded:
    name: str
    pid: int
    started: float  # psutil's create_time: the same pid with another start is another process

    @classmethod
    def of(cls, name: str, pid: int) -> Recorded | None:
        try:
            return cls(name, pid, psutil.Process(pid).create_time())
        except psutil.Error:
            return None  # gone already: nothing to record

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            return (abs(process.create_time() - self.started) < 0.01
                    and process.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False


class StateDirLock:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the state directory, or StateDirInUse naming what still runs there."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirInUse(self._refusal(locked=True)) from None
        if self.survivors():
            os.close(fd)  # closing lets go of the lock
            raise StateDirInUse(self._refusal(locked=False))
        self._fd = fd
        self.record([])

    def ensure_free(self) -> None:
        """StateDirInUse unless nothing runs on the state directory (``mfr demo``, before it
        removes the directory)."""
        if (self.state_dir / LOCK_NAME).exists():
            self.acquire()
            self.release()

    def survivors(self) -> list[Recorded]:
        """The recorded processes still alive, the supervisor first."""
        try:
            entries = json.loads((self.state_dir / RECORD_NAME).read_text())
            recorded = [Recorded(**entry) for entry in entries]
        except (OSError, ValueError, TypeError):
            return []  # none recorded, or a record cut short: nothing to go by
        return [process for process in recorded if process.alive()]

    def record(self, processes: Iterable[tuple[str, int]]) -> None:
        """Record the supervisor (this process) and ``processes`` (name, pid); only while held.
        Written to a temporary file then renamed: a reader never sees half a record."""
        if self._fd is None:
            return
        entries = [Recorded.of(SUPERVISOR, os.getpid()),
                   *(Recorded.of(name, pid) for name, pid in processes)]
        path = self.state_dir / RECORD_NAME
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps([asdict(e) for e in entries if e is not None]))
        temporary.replace(path)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / RECORD_NAME).unlink()
        os.close(self._fd)
        self._fd = None

    def _refusal(self, locked: bool) -> str:
        survivors = self.survivors()
        named = ", ".join(f"{p.name} (pid {p.pid})" for p in survivors)
        where = f"state directory {self.state_dir}"
        if locked and not any(p.name == SUPERVISOR for p in survivors):
            return (f"{where} is in use by another `mfr up` (it holds {LOCK_NAME})"
                    f"{': ' + named if named else ''}; stop it (Ctrl-C in its terminal) "
                    "or give this one another --state-dir")
        if locked:
            supervisor = next(p.pid for p in survivors if p.name == SUPERVISOR)
            return (f"{where} is in use by another `mfr up`: {named}; stop it (Ctrl-C in its "
                    f"terminal, or `kill {supervisor}`: its processes stop with it) or give "
                    "this one another --state-dir")
        pids = " ".join(str(p.pid) for p in survivors)
        return (f"processes of an earlier `mfr up` on {where} are still running: {named}; "
                f"end them (`kill {pids}`) or wait for them to exit, then start again "
                "(or give this one another --state-dir)")
