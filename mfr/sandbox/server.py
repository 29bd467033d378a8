"""The fork server: ``python -m mfr.sandbox.server FD MODULE...``, exec'd by a service with
the allow-listed environment (:mod:`mfr.sandbox.environment`) and one socket, FD.

It imports MODULE... once (numpy, onnxruntime: a child starts in milliseconds), then
for each request on the socket (a pickled ``(target, args, Confinement)`` with two
descriptors: the child's channel and the pipe for its exit status) forks a child,
answers its pid, and writes the child's exit status to that pipe when it is reaped.
The child closes every other descriptor, confines itself (:func:`policy.apply`) and
runs ``target(*args, channel)``. When the service goes away (the socket closes) the
server kills its children and exits. It never runs a model itself.
"""

from __future__ import annotations

import importlib
import os
import pickle
import selectors
import signal
import socket
import sys
import traceback
from multiprocessing.connection import Connection

from mfr.sandbox.wire import MAX_REQUEST, PID, STATUS


def resolve(target: str):
    module, _, name = target.partition(":")
    value = importlib.import_module(module)
    for part in name.split("."):
        value = getattr(value, part)
    return value


def _child(channel_fd: int, request: bytes) -> None:
    """In the forked child: never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        _die_with_parent()
        os.closerange(3, channel_fd)
        os.closerange(channel_fd + 1, os.sysconf("SC_OPEN_MAX"))
        target, args, confinement = pickle.loads(request)
        from mfr.sandbox.policy import Unconfined, apply

        try:
            apply(confinement)
        except Unconfined as exc:
            print(f"mfr sandbox: {exc}", file=sys.stderr, flush=True)
            from mfr.sandbox.policy import UNCONFINED_EXIT

            os._exit(UNCONFINED_EXIT)
        resolve(target)(*args, Connection(channel_fd))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child's crash, into its log
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _die_with_parent() -> None:
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the server died between fork and prctl
        os._exit(1)


def serve(sock: socket.socket) -> None:
    children: dict[int, int] = {}  # pid -> write end of its status pipe
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    try:
        while True:
            for key, _ in selector.select():
                if key.fileobj is sock and not _accept(sock, children):
                    return
                if key.fileobj == wake_r:
                    os.read(wake_r, 4096)
                    _reap(children)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _accept(sock: socket.socket, children: dict[int, int]) -> bool:
    """One request: fork its child. False when the service has gone."""
    try:
        request, fds, _flags, _addr = socket.recv_fds(sock, MAX_REQUEST, 2)
    except OSError:
        return False
    if not request:
        return False
    channel_fd, status_fd = fds
    pid = os.fork()
    if pid == 0:
        os.close(status_fd)
        _child(channel_fd, request)
    os.close(channel_fd)
    children[pid] = status_fd
    sock.sendall(PID.pack(pid))
    return True


def _reap(children: dict[int, int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        status_fd = children.pop(pid, None)
        if status_fd is not None:
            os.write(status_fd, STATUS.pack(os.waitstatus_to_exitcode(status)))
            os.close(status_fd)


def main() -> None:
    fd, modules = int(sys.argv[1]), sys.argv[2:]
    sock = socket.socket(fileno=fd)
    for name in modules:
        importlib.import_module(name)
    from mfr.sandbox import seccomp

    seccomp.preload()
    sock.sendall(PID.pack(os.getpid()))  # ready
    serve(sock)


if __name__ == "__main__":
    main()
