"""The dispatcher: drives each submission through validator, embedder, scorer and ranker.

A process runs ``workers`` threads that claim submissions from PostgreSQL
(:mod:`mfr.records.leases`) and run the stages (:mod:`services.dispatcher.stages`), a
heartbeat that renews their leases (and lets go of a submission an organiser
cancelled or re-ran), and a listener that wakes the workers as soon as a
submission is queued (``NOTIFY mfr_submissions``). Errors:

* transient (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, and anything
  unexpected here): the submission is given back with exponential back-off and
  tried again, up to ``max_attempts`` claims, then it fails with the last reason;
* permanent (any other status, or a failed scoring job): ``failed`` at once,
  with the service's message and stable code for the participant.

gRPC: health only (``grpc.health.v1``), SERVING once the database answers.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
from pydantic_settings import BaseSettings, SettingsConfigDict

from mfr.records.leases import Claim, LeaseLost, Leases
from services.dispatcher.stages import Peers, Permanent, Pipeline, Stage
from mfr.logs import get_logger
from mfr.rpc.interceptors import error_code_of

log = get_logger("services.dispatcher.dispatcher")

TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.RESOURCE_EXHAUSTED}
SERVICE_OF_STAGE = {"queued": "validator", "validating": "validator", "embedding": "embedder",
                    "scoring": "scorer"}


class DispatcherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MFR_DISPATCH_", extra="ignore")

    workers: int = 2
    lease_s: float = 60.0
    poll_s: float = 2.0
    max_attempts: int = 8
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0
    validate_timeout_s: float = 1800.0
    embed_timeout_s: float = 6 * 3600.0


@dataclass
class Outcome:
    kind: str  # "done", "retry", "failed", "lost"
    reason: str = ""


def backoff_s(attempt: int, base: float, cap: float) -> float:
    """Exponential back-off with full jitter: uniform in [cap/2, cap] of ``base * 2**(n-1)``."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def readable(err: grpc.RpcError, stage: str) -> tuple[str, str]:
    """(code, message) of a failed call, for the participant."""
    service = SERVICE_OF_STAGE.get(stage, "a service")
    code = error_code_of(err) if hasattr(err, "trailing_metadata") else None
    status = err.code().name.lower() if callable(getattr(err, "code", None)) else "error"
    return code or status, f"the {service} failed ({status}): {err.details() or 'no details'}"


class Dispatcher:
    def __init__(self, leases: Leases, pipeline: Pipeline, settings: DispatcherSettings) -> None:
        self.leases = leases
        self.pipeline = pipeline
        self.settings = settings
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.active: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    # --- one submission ----------------------------------------------------------------
    def run_once(self) -> Outcome | None:
        """Claim one submission and drive it as far as it goes now; None when nothing waits."""
        claim = self.leases.claim()
        if claim is None:
            return None
        with self._lock:
            self.active[claim.id] = claim
        try:
            return self._drive(claim)
        finally:
            with self._lock:
                self.active.pop(claim.id, None)

    def _drive(self, claim: Claim) -> Outcome:
        log.info("driving", submission=claim.id, state=claim.state, run=claim.run,
                 attempt=claim.row["attempts"])
        try:
            self.pipeline.drive(claim)
            return Outcome("done", claim.state)
        except LeaseLost:
            return self._lost(claim)
        except Permanent as exc:
            return self._fail(claim, exc.code, exc.message)
        except grpc.RpcError as err:
            if claim.lost.is_set() or self.stopping.is_set():
                return self._lost(claim)
            code, message = readable(err, claim.state)
            if err.code() in TRANSIENT:
                return self._retry(claim, message)
            return self._fail(claim, code, message)
        except Exception as exc:
            log.error("stage crashed", submission=claim.id, state=claim.state, exc_info=exc)
            return self._retry(claim, f"internal error in the dispatcher ({type(exc).__name__})")

    def _lost(self, claim: Claim) -> Outcome:
        if self.stopping.is_set():
            self.leases.release(claim)  # shutting down: let another dispatcher resume at once
        log.info("let go", submission=claim.id, state=self.leases.current_state(claim.id))
        return Outcome("lost")

    def _retry(self, claim: Claim, reason: str) -> Outcome:
        attempts = claim.row["attempts"]
        if attempts >= self.settings.max_attempts:
            return self._fail(claim, "unavailable",
                              f"gave up after {attempts} attempts: {reason}")
        delay = backoff_s(attempts, self.settings.backoff_base_s, self.settings.backoff_max_s)
        log.warning("retrying later", submission=claim.id, state=claim.state, attempt=attempts,
                    delay_s=round(delay, 1), reason=reason)
        self.leases.release(claim, delay, reason)
        return Outcome("retry", reason)

    def _fail(self, claim: Claim, code: str, message: str) -> Outcome:
        log.warning("failed", submission=claim.id, state=claim.state, code=code, reason=message)
        try:
            self.leases.advance(claim, "failed", {"code": code, "reason": message},
                                error=message, error_code=code)
        except LeaseLost:
            return self._lost(claim)
        return Outcome("failed", message)

    # --- the process -----------------------------------------------------------------
    def start(self) -> None:
        for index in range(self.settings.workers):
            self.threads.append(threading.Thread(target=self._work, name=f"dispatch-{index}",
                                                 daemon=True))
        self.threads.append(threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True))
        self.threads.append(threading.Thread(target=self._listen, name="listen", daemon=True))
        for thread in self.threads:
            thread.start()

    def stop(self, grace: float = 10.0) -> None:
        self.stopping.set()
        self.wake.set()
        with self._lock:
            claims = list(self.active.values())
        for claim in claims:
            claim.let_go()
        for thread in self.threads:
            thread.join(grace)

    def _work(self) -> None:
        while not self.stopping.is_set():
            try:
                outcome = self.run_once()
            except Exception as exc:  # noqa: BLE001 - the database is down: wait and retry
                log.warning("claim failed", error=str(exc))
                outcome = None
                self.stopping.wait(self.settings.poll_s)
            if outcome is None:
                self.wake.wait(self.settings.poll_s)
                self.wake.clear()

    def _heartbeat(self) -> None:
        while not self.stopping.wait(self.settings.lease_s / 3):
            with self._lock:
                claims = list(self.active.values())
            for claim in claims:
                try:
                    if not self.leases.renew(claim):
                        log.info("lease lost", submission=claim.id)
                        claim.let_go()
                except Exception as exc:  # noqa: BLE001 - try again next beat
                    log.warning("renew failed", submission=claim.id, error=str(exc))

    def _listen(self) -> None:
        pool = self.leases.pool
        while not self.stopping.is_set():
            try:
                with psycopg.connect(pool.conninfo, autocommit=True, **pool.kwargs) as conn:
                    conn.execute("LISTEN mfr_submissions")
                    while not self.stopping.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.wake.set()
            except Exception as exc:  # noqa: BLE001 - polling still works meanwhile
                log.warning("listen failed", error=str(exc))
                self.stopping.wait(self.settings.poll_s)


def testset_id_from_env() -> str:
    """``MFR_TESTSET_ID``, else the id in ``$MFR_TESTSET/testset.json``."""
    import json

    if os.environ.get("MFR_TESTSET_ID"):
        return os.environ["MFR_TESTSET_ID"]
    folder = os.environ.get("MFR_TESTSET")
    if folder:
        return json.loads((Path(folder) / "testset.json").read_text())["id"]
    return ""


def main() -> None:
    from mfr.db.pool import ping, pool_from_settings
    from mfr.logs import configure_logging
    from mfr.rpc.client import channel
    from mfr.rpc.server import GrpcServer, run_service
    from mfr.rpc.service import service_settings
    from mfr.settings import PeerSettings
    from mfr.storage import ObjectStore
    from services.ranker.serving import serving_challenge

    settings = service_settings("dispatcher")
    configure_logging(settings.log_format, settings.log_level, service="dispatcher")
    dispatch = DispatcherSettings()
    _, challenge_toml = serving_challenge()
    testset_id = testset_id_from_env()
    if not testset_id:
        log.warning("no test set: set MFR_TESTSET (a test-set folder) or MFR_TESTSET_ID")
    peers_at = PeerSettings()
    channels = {name: channel(getattr(peers_at, f"{name}_addr"))
                for name in ("validator", "embedder", "scorer", "ranker")}
    pool = pool_from_settings(name="dispatcher")
    pool.open(wait=False)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    leases = Leases(pool, owner, dispatch.lease_s)
    pipeline = Pipeline(Stage(leases, ObjectStore.from_settings(), Peers.connect(channels),
                              challenge_toml, testset_id, dispatch.validate_timeout_s,
                              dispatch.embed_timeout_s, os.environ.get("MFR_ADMIN_TOKEN", "")))
    dispatcher = Dispatcher(leases, pipeline, dispatch)
    server = GrpcServer("dispatcher", settings.host, settings.grpc_port, settings.metrics_port)
    dispatcher.start()

    def stop() -> None:
        dispatcher.stop()
        for ch in channels.values():
            ch.close()
        pool.close()

    run_service(server, ready=lambda: ping(pool), grace=settings.shutdown_grace_s, on_stop=stop)
