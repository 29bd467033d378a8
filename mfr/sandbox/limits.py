"""Child processes that run a participant's model: the limits they live under, and how their
death is read.

Both the validator (one child per validation) and the embedder workers (one child
per cached model) start untrusted models in a child of the model fork server
(:mod:`mfr.sandbox`), limited here (applied by :mod:`mfr.sandbox.policy`): an address-space limit (not on a GPU, where a
CUDA context reserves tens of GB of address space and the container's cgroup bounds
memory instead), a file-size limit, no core dumps, stdout and stderr in a log file,
an empty working directory. The parent enforces time with SIGKILL and reads the exit and the
log's tail to tell an out-of-memory death from another crash.
"""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path

MEMORY_HINTS = ("bad_alloc", "memoryerror", "out of memory", "failed to allocate",
                "cannot allocate")


def limit_resources(workdir: Path, memory_bytes: int, file_bytes: int,
                    limit_address_space: bool, log_name: str) -> None:
    """Called first thing in the child (by :func:`mfr.sandbox.policy.apply`): limits, the
    log on stdout and stderr, stdin from /dev/null, an empty current directory."""
    log = os.open(workdir / log_name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    if limit_address_space:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails instead of killing
    cwd = workdir / "cwd"
    cwd.mkdir(exist_ok=True)
    os.chdir(cwd)


def out_of_memory(exitcode: int | None, log_tail: str) -> bool:
    """Killed by the kernel (SIGKILL: the cgroup's OOM killer) or aborted out of memory."""
    return exitcode == -signal.SIGKILL or any(h in log_tail.lower() for h in MEMORY_HINTS)


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "did not exit"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def log_tail(path: Path, limit: int = 8192) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def raise_if_unconfined(exitcode: int | None, log: str) -> None:
    """A child that exited because it could not be confined (before it read the model):
    the platform's failure, retried elsewhere, never the model's."""
    from mfr.errors import Unavailable
    from mfr.sandbox.policy import UNCONFINED_EXIT

    if exitcode == UNCONFINED_EXIT:
        raise Unavailable(log[-500:].strip(), code="sandbox_unavailable")
