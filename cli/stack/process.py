"""Child processes that never outlive the process that started them."""

from __future__ import annotations

import ctypes
import os
import pwd
import signal
import subprocess
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM, user: str | None = None) -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to send ``signum`` when the parent dies.

    This covers the case no signal handler can: a SIGKILLed parent. The kernel
    clears the request when credentials change, so a child that must run as
    another user (PostgreSQL refuses root) switches user here first, then asks.
    """
    entry = pwd.getpwnam(user) if user else None

    def preexec() -> None:
        if entry is not None:
            os.setgroups([entry.pw_gid])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signum)

    return preexec


def stop_process(process: subprocess.Popen | None, signum: int, timeout: float) -> None:
    """Ask a child to stop with ``signum``; SIGKILL it if it is still there after ``timeout``."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
