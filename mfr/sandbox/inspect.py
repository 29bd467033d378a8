"""What a confined model process can see and do, reported from inside it.

:func:`report` runs as the target of a model process, started exactly as a model's is
(the same fork server, the same :class:`Confinement`): the services run it once at
start (their ``model-confinement`` readiness check) and the tests run it with attempts
a hostile model would make.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from prometheus_client import Gauge

from mfr.sandbox import policy
from mfr.sandbox.environment import is_secret_name

CONFINEMENT = Gauge("mfr_model_confinement",
                    "1 while this process's model processes are confined by the layer "
                    "(seccomp, landlock, environment), as its start-up check found",
                    ["layer"])


@dataclass(frozen=True)
class Attempts:
    """What the probe tries, besides reading its own status and environment."""

    connect: tuple[tuple[str, int], ...] = ()  # TCP addresses (the database, S3)
    write: tuple[str, ...] = ()  # files outside its scratch folder
    read: tuple[str, ...] = ()  # files it was not given (a credentials file)
    signal_pid: int = 0  # a process outside (its service)
    exec_program: str = ""  # a program to run after start-up


def _status() -> dict[str, str]:
    lines = Path("/proc/self/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _outcome(action) -> str:
    try:
        action()
    except OSError as exc:
        return type(exc).__name__
    return "ok"


def _connect(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=2):
        pass


def _write(path: str) -> None:
    with open(path, "w") as handle:
        handle.write("written by a model process")


def _read(path: str) -> None:
    Path(path).read_bytes()


def _open_fds() -> list[int]:
    listed = [int(fd) for fd in os.listdir("/proc/self/fd")]
    return sorted(fd for fd in listed if _outcome(lambda fd=fd: os.fstat(fd)) == "ok")


def run(attempts: Attempts) -> dict:
    status = _status()
    environ = Path("/proc/self/environ").read_bytes().split(b"\0")
    found = {
        "pid": os.getpid(),
        "seccomp": int(status.get("Seccomp", "0")),
        "no_new_privs": int(status.get("NoNewPrivs", "0")),
        "enforced": policy.ENFORCED,
        "environ": sorted(item.decode(errors="replace") for item in environ if item),
        "open_fds": _open_fds(),
        "connect": {f"{h}:{p}": _outcome(lambda h=h, p=p: _connect(h, p))
                    for h, p in attempts.connect},
        "write": {path: _outcome(lambda path=path: _write(path)) for path in attempts.write},
        "read": {path: _outcome(lambda path=path: _read(path)) for path in attempts.read},
        "scratch_write": _outcome(lambda: tempfile.NamedTemporaryFile(dir=os.getcwd()).close()),
    }
    if attempts.signal_pid:
        found["signal"] = _outcome(lambda: os.kill(attempts.signal_pid, 0))
    if attempts.exec_program:
        found["exec"] = _outcome(lambda: subprocess.run([attempts.exec_program], check=True,
                                                        capture_output=True, timeout=10))
    return found


def report(attempts: Attempts, conn: Connection) -> None:
    """The model process's target: one JSON report on the channel."""
    conn.send_bytes(json.dumps({**run(attempts), "channel_fd": conn.fileno()}).encode())


def self_check(preload: tuple[str, ...], threads: int, gpu: bool, required: bool) -> dict:
    """A service's start-up check: a model process started as its models are, reporting
    what confines it. Raises ``RuntimeError`` when it runs unconfined and the organiser
    did not opt out; the report says what holds (logged by the caller)."""
    import shutil

    from mfr.sandbox.client import fork_server

    workdir = tempfile.mkdtemp(prefix="mfr-confinement-check-")
    try:
        child, conn = fork_server(*preload, threads=threads).start(
            report, (Attempts(),),
            policy.Confinement(workdir, "check.log", 4 << 30, 1 << 20, gpu=gpu,
                               required=required))
        with conn:
            if not conn.poll(120):
                child.kill()
                raise RuntimeError("the confinement check did not answer within 120 s")
            try:
                found = json.loads(conn.recv_bytes(1 << 16))
            except EOFError:
                child.join(5)
                log = Path(workdir, "check.log").read_text(errors="replace")[-500:].strip()
                raise RuntimeError(f"a model process cannot be confined: {log}") from None
        child.join(5)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # Its own filter (an inherited one, e.g. the container runtime's, also reads as mode 2).
    filtered = bool(found["enforced"].get("seccomp")) and found["seccomp"] == 2
    if required and not (filtered and found["no_new_privs"] == 1):
        raise RuntimeError(f"a model process runs without its seccomp filter: {found}")
    return {"seccomp": filtered, "no_new_privs": found["no_new_privs"] == 1,
            "landlock_abi": found["enforced"].get("landlock_abi", 0),
            "environment": sorted(item.partition("=")[0] for item in found["environ"])}


class ConfinementCheck:
    """The ``model-confinement`` start-up work of a service that runs models, and its
    health condition. The work passes when its model processes are confined, or when the
    organiser opted out; ``confined()`` (gRPC health ``Check(service="model-confinement")``,
    the ``mfr_model_confinement`` gauge) says which."""

    def __init__(self, preload: tuple[str, ...], threads: int, gpu: bool,
                 allow_unconfined: bool) -> None:
        self.preload, self.threads, self.gpu = preload, threads, gpu
        self.allow_unconfined = allow_unconfined
        self.found: dict | None = None

    def __call__(self) -> dict:
        from mfr.logs import get_logger

        found = self_check(self.preload, self.threads, self.gpu,
                           required=not self.allow_unconfined)
        CONFINEMENT.labels("seccomp").set(int(found["seccomp"] and found["no_new_privs"]))
        CONFINEMENT.labels("landlock").set(int(found["landlock_abi"] > 0))
        clean = not any(is_secret_name(name) for name in found["environment"])
        CONFINEMENT.labels("environment").set(int(clean))
        if not found["seccomp"]:
            get_logger("mfr.sandbox").warning(
                "participants' models run WITHOUT their seccomp filter "
                "(MFR_ALLOW_UNCONFINED_MODELS=1)", **found)
        self.found = found
        return found

    def confined(self) -> bool:
        return bool(self.found and self.found["seccomp"] and self.found["no_new_privs"])
