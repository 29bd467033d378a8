"""The service's side of the fork server: start a confined child, watch it, kill it.

``ForkServer(preload).start(target, args, confinement)`` returns a :class:`Child`
(``pid``, ``is_alive()``, ``join()``, ``kill()``, ``exitcode``: what the services used
from ``multiprocessing.Process``) and the service's end of its channel (a
``multiprocessing.connection.Connection``). The server is exec'd once per service
process and preload module, lazily, with the allow-listed environment; if it dies, the
next start execs a new one.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

from mfr.sandbox.environment import confined_environment
from mfr.sandbox.policy import Confinement
from mfr.sandbox.wire import PID, STATUS

START_TIMEOUT_S = 120.0  # importing onnxruntime (and torch) on a busy machine


class Child:
    """A confined process started by the fork server (not this process's own child: its
    exit status comes through a pipe from the server, which reaps it)."""

    def __init__(self, pid: int, status_fd: int) -> None:
        self.pid = pid
        self._status_fd = status_fd
        self._exitcode: int | None = None

    @property
    def exitcode(self) -> int | None:
        self.join(0)
        return self._exitcode

    def join(self, timeout: float | None = None) -> None:
        if self._exitcode is not None or self._status_fd < 0:
            return
        readable, _, _ = select.select([self._status_fd], [], [], timeout)
        if readable:
            data = os.read(self._status_fd, STATUS.size)
            # No status (the server died before reaping it): killed with the server.
            self._exitcode = STATUS.unpack(data)[0] if len(data) == STATUS.size else -9
            os.close(self._status_fd)
            self._status_fd = -1

    def is_alive(self) -> bool:
        return self.exitcode is None

    def kill(self) -> None:
        if self.is_alive():  # not yet reaped: the pid is still this child's
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass

    def __del__(self) -> None:
        if self._status_fd >= 0:
            os.close(self._status_fd)


class ForkServer:
    def __init__(self, preload: tuple[str, ...], threads: int = 1) -> None:
        self.preload = preload
        self.threads = threads
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen | None = None
        self.scratch = ""  # the server's HOME and working directory, while it runs

    def start(self, target: Callable, args: tuple,
              confinement: Confinement) -> tuple[Child, Connection]:
        import pickle

        request = pickle.dumps((f"{target.__module__}:{target.__qualname__}", args,
                                confinement))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        status_r, status_w = os.pipe()
        try:
            with self._lock:
                sock = self._running()
                socket.send_fds(sock, [request], [theirs.fileno(), status_w])
                reply = sock.recv(PID.size)
                if len(reply) != PID.size:
                    self._stop()
                    raise RuntimeError("the model fork server exited")
        except BaseException:
            os.close(status_r)
            ours.close()
            raise
        finally:
            theirs.close()
            os.close(status_w)
        return Child(PID.unpack(reply)[0], status_r), Connection(ours.detach())

    def _running(self) -> socket.socket:
        if self._sock is not None and self._process and self._process.poll() is None:
            return self._sock
        self._stop()
        self.scratch = tempfile.mkdtemp(prefix="mfr-sandbox-")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "mfr.sandbox.server", str(theirs.fileno()),
                 *self.preload],
                env=confined_environment(self.scratch, self.threads), cwd=self.scratch,
                pass_fds=(theirs.fileno(),), close_fds=True, stdin=subprocess.DEVNULL)
        ours.settimeout(START_TIMEOUT_S)
        try:
            ready = ours.recv(PID.size)
        except TimeoutError:
            ready = b""
        ours.settimeout(None)
        if len(ready) != PID.size:
            ours.close()
            self._process.kill()
            raise RuntimeError("the model fork server did not start (see the log above)")
        self._sock = ours
        return ours

    def _stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = ""


_servers: dict[tuple[str, ...], ForkServer] = {}
_servers_lock = threading.Lock()


def fork_server(*preload: str, threads: int = 1) -> ForkServer:
    """This process's fork server for ``preload`` (one per module set)."""
    with _servers_lock:
        server = _servers.get(preload)
        if server is None:
            server = _servers[preload] = ForkServer(preload, threads)
        return server


def stop_fork_servers() -> None:
    """Stop this process's fork servers (the next start execs new ones): for tests that
    change the service's environment, and for a clean exit."""
    with _servers_lock:
        for server in _servers.values():
            with server._lock:
                server._stop()
        _servers.clear()
