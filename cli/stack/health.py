"""Waiting for a child of ``mfr up`` to answer its health check."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import urllib3

from mfr.rpc.client import wait_serving


class ChildExited(RuntimeError):
    """A child exited before it was healthy."""


def wait_healthy(name: str, process: subprocess.Popen, health: tuple[str, str], log: Path,
                 timeout: float = 60.0) -> None:
    """Until ``health`` (("grpc", "host:port") or ("http", url)) answers; ChildExited (with
    the end of its ``log``) when the process exits first, TimeoutError after ``timeout``."""
    kind, target = health
    deadline = time.monotonic() + timeout
    http = urllib3.PoolManager(retries=False, timeout=1.0)
    while True:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise ChildExited(f"{name} exited with {process.returncode}:\n{tail}")
        try:
            if kind == "grpc":
                wait_serving(target, timeout=0.5)
                return
            if http.request("GET", target).status == 200:
                return
        except (TimeoutError, urllib3.exceptions.HTTPError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} not healthy after {timeout:.0f}s")
        time.sleep(0.1)
