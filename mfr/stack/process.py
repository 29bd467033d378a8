"""Child processes that never outlive the process that started them."""

from __future__ import annotations

import ctypes
import os
import pwd
import signal
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
