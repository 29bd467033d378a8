"""The one start-up shape of every process: ``serve(name, SettingsClass, build)``.

A process module provides ``build(settings) -> Process`` and a ``main()`` that
calls :func:`serve`; this module does the rest the same way for all of them
(gRPC services, queue workers, the dispatcher, the HTTP gateway):

1. settings from the environment, once (a missing secret stops start-up
   with ``error[config_invalid]: MFR_X is not set``, exit 2);
2. logs, then ``build``;
3. the gRPC server with health and reflection (NOT_SERVING), and the
   Prometheus endpoint;
4. ``ready()`` polled until true, then SERVING and the background parts
   (queue workers, the dispatcher's threads, uvicorn) started;
5. on SIGTERM/SIGINT, or when a background part dies on its own: health
   NOT_SERVING, background parts stopped within the grace period, the
   server stopped, ``on_stop``; exit 0, or 1 when a part died.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from mfr.logs import configure_logging, get_logger
from mfr.rpc.server import GrpcServer
from mfr.settings import ServiceSettings

log = get_logger("mfr.rpc.process")
S = TypeVar("S", bound=ServiceSettings)


class Background(Protocol):
    """A part that runs beside the gRPC server (a queue worker, uvicorn, dispatch threads)."""

    def start(self) -> None: ...

    def stop(self, grace: float) -> None: ...

    def alive(self) -> bool: ...


@dataclass
class Process:
    """What a process contributes to the common shape."""

    servicers: list[tuple[Callable, Any, str]] = field(default_factory=list)  # (add_X, servicer, name)
    ready: Callable[[], bool] | None = None
    background: list[Background] = field(default_factory=list)
    on_stop: Callable[[], None] | None = None
    #: False for the gateway: its health is HTTP (/healthz), it opens no gRPC port.
    grpc: bool = True


def load_settings(settings_type: type[S]) -> S:
    """The process's settings; a missing or invalid variable stops start-up with its name."""
    from pydantic import ValidationError

    from mfr.settings import config_problem

    try:
        return settings_type()
    except ValidationError as exc:
        print(f"error[config_invalid]: {config_problem(exc)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def serve(name: str, settings_type: type[S], build: Callable[[S], Process]) -> None:
    settings = load_settings(settings_type)
    configure_logging(settings.log_format, settings.log_level, service=name)
    process = build(settings)
    raise SystemExit(run(name, settings, process))


class _Stop:
    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, signum: int, _frame: object) -> None:
        log.info("signal", signal=signal.Signals(signum).name)
        self.event.set()


def run(name: str, settings: ServiceSettings, process: Process, ready_poll_s: float = 0.5) -> int:
    """Run until a signal (0) or until a background part dies on its own (1)."""
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = None
    if process.grpc:
        server = GrpcServer(name, settings.host, settings.grpc_port, settings.metrics_port,
                            settings.max_workers)
        for add_to_server, servicer, full_name in process.servicers:
            server.add(add_to_server, servicer, full_name)
        server.start()
    if _wait_ready(name, process.ready, stop.event, ready_poll_s):
        if server:
            server.set_serving()
        for part in process.background:
            part.start()
    code = _wait(process.background, stop.event)
    started = time.monotonic()
    if server:
        server.health.enter_graceful_shutdown()
    for part in process.background:
        part.stop(settings.shutdown_grace_s)
    if server:
        server.stop(settings.shutdown_grace_s)
    if process.on_stop:
        process.on_stop()
    log.info("shutdown complete", service=name, seconds=round(time.monotonic() - started, 2))
    return code


def _wait_ready(name: str, ready: Callable[[], bool] | None, stop: threading.Event,
                poll_s: float) -> bool:
    while not stop.is_set():
        try:
            if ready is None or ready():
                return True
        except Exception as exc:  # noqa: BLE001 - not ready yet; say why and retry
            log.warning("not ready", service=name, reason=str(exc))
        stop.wait(poll_s)
    return False


def _wait(background: list[Background], stop: threading.Event) -> int:
    while not stop.wait(0.5):
        dead = [type(part).__name__ for part in background if not part.alive()]
        if dead:
            log.error("a background part ended on its own", parts=dead)
            return 1
    return 0


class Warmup:
    """Slow start-up work (a calibration, an upload) run off the start-up path, on a thread.

    ``ready()`` starts it (again, after a failure) and says whether it has succeeded, so
    it serves as, or inside, a process's readiness check.
    """

    def __init__(self, name: str, action: Callable[[], object]) -> None:
        self.name = name
        self.action = action
        self.done = threading.Event()
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _run(self) -> None:
        try:
            result = self.action()
        except Exception as exc:  # noqa: BLE001 - reported by ready() and retried
            self.error = str(exc)
            log.warning("start-up work failed", work=self.name, reason=self.error)
            return
        log.info("start-up work done", work=self.name, result=result)
        self.done.set()

    def ready(self) -> bool:
        with self._lock:
            if not self.done.is_set() and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        return self.done.is_set()
