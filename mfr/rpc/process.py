"""The one start-up shape of every process: ``serve(name, SettingsClass, build)``.

A process module provides ``build(settings) -> Process`` and a ``main()`` that
calls :func:`serve`; this module does the rest the same way for all of them
(gRPC services, queue workers, the dispatcher, the HTTP gateway):

1. settings from the environment, once (a missing secret stops start-up
   with ``error[config_invalid]: MFR_X is not set``, exit 2);
2. logs, then ``build``;
3. the gRPC server with health and reflection (NOT_SERVING), and the
   Prometheus endpoint;
4. the readiness checks (``mfr.health.Readiness``: PostgreSQL, S3, start-up
   work) run until they pass, then SERVING and the background parts (queue
   workers, the dispatcher's threads, uvicorn) started; the gateway, whose
   health is its own ``/healthz``, starts uvicorn at once;
5. the checks keep running every second: health goes NOT_SERVING while a
   dependency is unreachable and SERVING again when it is back (the health
   service ``liveness`` stays SERVING: the process is alive, only not ready);
6. on SIGTERM/SIGINT, or when a background part dies on its own: health
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

from mfr.health import Readiness
from mfr.logs import configure_logging, get_logger
from mfr.rpc.server import GrpcServer
from mfr.settings import ProcessSettings

log = get_logger("mfr.rpc.process")
S = TypeVar("S", bound=ProcessSettings)


class Background(Protocol):
    """A part that runs beside the gRPC server (a queue worker, uvicorn, dispatch threads)."""

    def start(self) -> None: ...

    def stop(self, grace: float) -> None: ...

    def alive(self) -> bool: ...


@dataclass
class Process:
    """What a process contributes to the common shape."""

    servicers: list[tuple[Callable, Any, str]] = field(default_factory=list)  # (add_X, servicer, name)
    #: What must answer before, and while, the process serves (None: nothing).
    ready: Readiness | None = None
    background: list[Background] = field(default_factory=list)
    on_stop: Callable[[], None] | None = None
    #: False for the gateway: its health is HTTP (/healthz), it opens no gRPC port.
    grpc: bool = True
    #: Named conditions answered by the gRPC health service under their own names (SERVING
    #: while true), beside readiness: what an operator asks, not what a probe gates on
    #: (e.g. ``model-confinement``: false where models run unconfined by the opt-out).
    conditions: dict[str, Callable[[], bool]] = field(default_factory=dict)
    #: Methods (``/pkg.Service/Method``) callers may use without the service token: only
    #: the ranker's public reads, for external tools (mfr/rpc/auth.py).
    public_methods: frozenset[str] = frozenset()


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


def run(name: str, settings: ProcessSettings, process: Process, ready_poll_s: float = 1.0) -> int:
    """Run until a signal (0) or until a background part dies on its own (1)."""
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = None
    if process.grpc:
        server = GrpcServer(name, settings.host, settings.grpc_port, settings.metrics_port,
                            settings.max_workers,  # every gRPC process has ServiceTokenSettings
                            service_token=settings.service_token.get_secret_value(),
                            public_methods=process.public_methods)
        for add_to_server, servicer, full_name in process.servicers:
            server.add(add_to_server, servicer, full_name)
        server.start()
    watch = _ReadinessWatch(name, server, process.ready, ready_poll_s, process.conditions)
    # Without a gRPC port the background part serves the health itself (the gateway's
    # /healthz answers 503 while not ready), so it starts at once.
    if not process.grpc or watch.until_ready(stop.event):
        for part in process.background:
            part.start()
    watch.start()
    code = _wait(process.background, stop.event)
    started = time.monotonic()
    watch.stop()
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


class _ReadinessWatch:
    """Re-runs the readiness checks and flips the gRPC health between SERVING and
    NOT_SERVING, logging each change once."""

    def __init__(self, name: str, server: GrpcServer | None, readiness: Readiness | None,
                 poll_s: float, conditions: dict[str, Callable[[], bool]] | None = None) -> None:
        self.name = name
        self.server = server
        self.readiness = readiness
        self.conditions = conditions or {}
        self.poll_s = poll_s
        self.serving: bool | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readiness", daemon=True)

    def update(self) -> bool:
        if self.server and not self._stop.is_set():
            for condition, holds in self.conditions.items():
                self.server.set_condition(condition, bool(holds()))
        verdict = self.readiness.check() if self.readiness else None
        ready = verdict is None or verdict.ready
        if ready != self.serving and not self._stop.is_set():
            self.serving = ready
            if ready and self.server:
                self.server.set_serving()  # logs "serving"
            elif ready:
                log.info("serving", service=self.name)
            else:
                if self.server:
                    self.server.set_not_serving()
                log.warning("not serving", service=self.name, failing=verdict.failing)
        return ready

    def until_ready(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            if self.update():
                return True
            stop.wait(self.poll_s)
        return False

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.update()

    def start(self) -> None:
        if self.readiness or self.conditions:
            self._thread.start()

    def stop(self) -> None:
        """Before the graceful shutdown; no join, so a check in flight delays nothing (the
        health servicer ignores a late SERVING once it is shutting down)."""
        self._stop.set()


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
