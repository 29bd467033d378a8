"""Readiness: named checks of what a process depends on (PostgreSQL, S3, start-up work).

A process is *live* while it runs and answers; it is *ready* while every check
passes. The process runner (``mfr.rpc.process``) re-runs the checks every
second and flips the gRPC health status; the gateway's ``/healthz`` reads the
same verdict. Each check runs on a daemon thread and is waited for at most
``timeout_s``: a dead or frozen server makes the check fail, never hang its
caller, and a check still stuck from an earlier round is joined, not started
again (no pile-up of threads on a frozen server).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from prometheus_client import Gauge

from mfr.logs import get_logger

log = get_logger("mfr.health")

CHECK_TIMEOUT_S = 2.0
REASON_LIMIT = 300  # a connection error can be long; the health answer stays short

DEPENDENCY_UP = Gauge("mfr_dependency_up",
                      "1 while the process's readiness check of the dependency passes",
                      ["dependency"])


@dataclass(frozen=True)
class Verdict:
    """The outcome of one round of checks: what fails, and why."""

    failing: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return not self.failing


class Readiness:
    """``Readiness({"postgres": lambda: ping(pool), "s3": store.ready})``: a check passes
    when it returns a true value within ``timeout_s`` without raising."""

    def __init__(self, checks: dict[str, Callable[[], object]],
                 timeout_s: float = CHECK_TIMEOUT_S) -> None:
        self.checks = checks
        self.timeout_s = timeout_s
        self._running: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._up: dict[str, bool] = {}
        self._latest: Verdict | None = None
        self._latest_at = float("-inf")

    def check(self) -> Verdict:
        """Run every check now (in parallel), waiting at most ``timeout_s``."""
        with self._lock:
            running = {name: self._start(name) for name in self.checks}
        deadline = time.monotonic() + self.timeout_s
        failing = {}
        for name, future in running.items():
            try:
                if not future.result(timeout=max(0.0, deadline - time.monotonic())):
                    failing[name] = "not ready yet"
            except TimeoutError:
                failing[name] = f"no answer within {self.timeout_s:g} s"
            except Exception as exc:  # noqa: BLE001 - any failure is a failing check, with why
                failing[name] = (str(exc) or type(exc).__name__)[:REASON_LIMIT]
        verdict = Verdict(failing)
        self._record(verdict)
        return verdict

    def latest(self, max_age_s: float = 1.0) -> Verdict:
        """The last verdict when it is recent, else a fresh one (bounded by ``timeout_s``)."""
        with self._lock:
            if self._latest is not None and time.monotonic() - self._latest_at <= max_age_s:
                return self._latest
        return self.check()

    def _start(self, name: str) -> Future:
        running = self._running.get(name)
        if running is not None and not running.done():
            return running
        future: Future = Future()
        check = self.checks[name]

        def work() -> None:
            try:
                future.set_result(check())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on it
                future.set_exception(exc)

        # A daemon thread, not an executor: a check stuck on a frozen server must not
        # keep the process from exiting.
        threading.Thread(target=work, name=f"ready-{name}", daemon=True).start()
        self._running[name] = future
        return future

    def _record(self, verdict: Verdict) -> None:
        """Keep the verdict; log each dependency's change of state once, set its gauge."""
        with self._lock:
            self._latest, self._latest_at = verdict, time.monotonic()
            for name in self.checks:
                up = name not in verdict.failing
                DEPENDENCY_UP.labels(name).set(1 if up else 0)
                if self._up.get(name) == up:
                    continue
                self._up[name] = up
                if up:
                    log.info("dependency up", dependency=name)
                else:
                    log.warning("dependency down", dependency=name,
                                reason=verdict.failing[name])
