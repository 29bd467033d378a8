"""The dispatch loop: drives each submission through validator, embedder and scorer.

A process runs ``workers`` threads that claim submissions from PostgreSQL
(:mod:`mfr.records.leases`) and run the stages (:mod:`services.dispatcher.stages`), a
heartbeat that renews their leases (and lets go of a submission an organiser
cancelled or re-ran), and a listener that wakes the workers as soon as a
submission is queued (``NOTIFY mfr_submissions``). Errors:

* transient (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNAUTHENTICATED
  while a service token is rotated, and anything unexpected here): the submission
  is given back with exponential back-off and tried again, up to
  ``MFR_DISPATCH_MAX_ATTEMPTS`` claims, then it fails with the last reason (a
  platform code: the quota slot is given back);
* a platform fault (an embedding or scoring job that failed on our side, see
  :mod:`mfr.faults`): a new job after back-off, up to ``MFR_DISPATCH_PLATFORM_RETRIES``
  times, then ``failed`` with the job's code, and the participant's quota slot is
  given back (the quota count skips platform faults);
* permanent (any other status, or a job the model made fail): ``failed`` at once,
  with the service's message and stable code for the participant.

A dispatcher that stops gracefully lets go of its claims without using up an
attempt and without cancelling the jobs it follows: the next claim re-attaches
to them (same job ids) and the submission ends as an undisturbed run would.

Everything done for a claim runs with the submission's id and its upload's request
id bound to the log context (:func:`trail`): each line the dispatcher writes names
both, and each gRPC call forwards the request id (:mod:`mfr.rpc.calls`), so one grep
follows the submission through every service (docs/operations.md).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from structlog.contextvars import bound_contextvars

from mfr.db.pool import listening
from mfr.errors import MfrError, Unavailable
from mfr.logs import get_logger
from mfr.records.leases import Claim, LeaseLost, Leases
from mfr.rpc.calls import RemoteError
from services.dispatcher.config import DispatchTuning
from services.dispatcher.stages import Permanent, PlatformFault, Stages

log = get_logger("services.dispatcher")


@dataclass
class Outcome:
    kind: str  # "done", "retry", "failed", "lost"
    reason: str = ""


def trail(claim: Claim) -> dict[str, str]:
    """What the log context carries while working for ``claim``. A row uploaded before
    request ids were stored goes by its submission id: still one id for its whole path."""
    return {"submission": claim.id, "request_id": claim.row.get("request_id") or claim.id}


def backoff_s(attempt: int, base: float, cap: float) -> float:
    """Exponential back-off with full jitter: uniform in [cap/2, cap] of ``base * 2**(n-1)``."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


class Dispatcher:
    """The dispatcher process's background part: dispatch threads, heartbeat, listener."""

    def __init__(self, leases: Leases, stages: Stages, settings: DispatchTuning) -> None:
        self.leases = leases
        self.stages = stages
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
        with bound_contextvars(**trail(claim)):
            return self._drive_bound(claim)

    def _drive_bound(self, claim: Claim) -> Outcome:
        log.info("driving", submission=claim.id, state=claim.state, run=claim.run,
                 attempt=claim.row["attempts"])
        try:
            self.stages.drive(claim)
            return Outcome("done", claim.state)
        except LeaseLost:
            return self._lost(claim)
        except PlatformFault as exc:
            return self._platform_fault(claim, exc)
        except Permanent as exc:
            return self._fail(claim, exc.code, exc.message)
        except MfrError as err:
            if claim.lost.is_set() or self.stopping.is_set():
                return self._lost(claim)
            transient = err.transient if isinstance(err, RemoteError) else \
                isinstance(err, Unavailable)
            if transient:
                return self._retry(claim, err.message)
            return self._fail(claim, err.code, err.message)
        except Exception as exc:
            log.error("stage crashed", submission=claim.id, state=claim.state, exc_info=exc)
            return self._retry(claim, f"internal error in the dispatcher ({type(exc).__name__})")

    def _lost(self, claim: Claim) -> Outcome:
        if self.stopping.is_set():  # shutting down: let another dispatcher resume at once
            self.leases.release(claim, counted=False)
        log.info("let go", submission=claim.id, state=(self.leases.current(claim.id) or {}).get("state"))
        return Outcome("lost")

    def _retry(self, claim: Claim, reason: str) -> Outcome:
        attempts = claim.row["attempts"]
        if attempts >= self.settings.dispatch_max_attempts:
            return self._fail(claim, "unavailable",
                              f"gave up after {attempts} attempts: {reason}")
        delay = backoff_s(attempts, self.settings.dispatch_backoff_base_s,
                          self.settings.dispatch_backoff_max_s)
        log.warning("retrying later", submission=claim.id, state=claim.state, attempt=attempts,
                    delay_s=round(delay, 1), reason=reason)
        self.leases.release(claim, delay, reason)
        return Outcome("retry", reason)

    def _platform_fault(self, claim: Claim, fault: PlatformFault) -> Outcome:
        retries = claim.row.get("retries", 0)
        if retries >= self.settings.dispatch_platform_retries:
            return self._fail(claim, fault.code, f"{fault.message} (a platform fault, after "
                              f"{retries} retries: this submission does not count against "
                              "the daily limit)")
        delay = backoff_s(retries + 1, self.settings.dispatch_backoff_base_s,
                          self.settings.dispatch_backoff_max_s)
        log.warning("platform fault: retrying with a new job", submission=claim.id,
                    state=claim.state, code=fault.code, retry=retries + 1,
                    delay_s=round(delay, 1), reason=fault.message)
        self.leases.release(claim, delay, f"{fault.code}: {fault.message}", counted=False,
                            platform_retry=True)
        return Outcome("retry", fault.message)

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
        for index in range(self.settings.dispatch_workers):
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

    def alive(self) -> bool:
        return all(thread.is_alive() for thread in self.threads)

    def _work(self) -> None:
        while not self.stopping.is_set():
            try:
                outcome = self.run_once()
            except Exception as exc:  # noqa: BLE001 - the database is down: wait and retry
                log.warning("claim failed", error=str(exc))
                outcome = None
                self.stopping.wait(self.settings.dispatch_poll_s)
            if outcome is None:
                self.wake.wait(self.settings.dispatch_poll_s)
                self.wake.clear()

    def _heartbeat(self) -> None:
        while not self.stopping.wait(self.settings.dispatch_lease_s / 3):
            with self._lock:
                claims = list(self.active.values())
            for claim in claims:
                with bound_contextvars(**trail(claim)):
                    self._renew(claim)

    def _renew(self, claim: Claim) -> None:
        try:
            if not self.leases.renew(claim):
                log.info("lease lost", submission=claim.id)
                claim.let_go()
        except Exception as exc:  # noqa: BLE001 - try again next beat
            log.warning("renew failed", submission=claim.id, error=str(exc))

    def _listen(self) -> None:
        while not self.stopping.is_set():
            try:
                with listening(self.leases.pool, "mfr_submissions") as conn:
                    while not self.stopping.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.wake.set()
            except Exception as exc:  # noqa: BLE001 - polling still works meanwhile
                log.warning("listen failed", error=str(exc))
                self.stopping.wait(self.settings.dispatch_poll_s)
