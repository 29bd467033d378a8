"""The tile queue: procrastinate tasks on PostgreSQL (docs/scoring-service.md).

Three tasks, on one queue: ``scorer.plan`` (a new job: fetch, check, plan,
enqueue round 1), ``scorer.tile`` (one tile of the fixed grid), and
``scorer.merge`` (a round's exact merge: the final result, or the next round).
Plan and merge run before waiting tiles (priority) and never two at once for
one job (a procrastinate lock).

Deferral is synchronous and takes the caller's connection, so a job's rows in
scoring_* and its tasks appear in one transaction or not at all. Workers run
procrastinate's asyncio worker; each task's body is synchronous domain code
run on a thread of its own, so heartbeats go on while BLAS works, and a task
abandoned at shutdown is handed back to the queue at once while its thread is
left to die with the process.

What procrastinate does not do for us is decide when a task has failed for
good: the handlers count failures in scoring_* (a stalled worker's task
counts too) and raise :class:`GiveUp` once a job has been failed, the only
exception the retry strategy does not retry.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from procrastinate import App, PsycopgConnector, SyncPsycopgConnector
from procrastinate import exceptions as queue_errors
from procrastinate.jobs import Job as QueueJob
from procrastinate.retry import BaseRetryStrategy, RetryDecision
from prometheus_client import Gauge
from psycopg_pool import ConnectionPool

from mfr.logs import get_logger

log = get_logger("services.scorer.queue")

QUEUE = "scorer"
PLAN = "scorer.plan"
TILE = "scorer.tile"
MERGE = "scorer.merge"
# Plan and merge first: a finished round should not wait behind another job's tiles.
PRIORITY = {PLAN: 10, MERGE: 20, TILE: 0}

#: handler(abandoned, **task_kwargs): runs on a thread; ``abandoned`` is set when the
#: worker gave the task back (shutdown) and the handler should stop without committing.
Handler = Callable[..., Any]
#: on_failure(task_name, task_kwargs, reason) -> True when the job was failed for good.
FailureHook = Callable[[str, dict, str], bool]


#: The autoscaling signal (k8s/components/queue-autoscaling): every scorer process
#: reports the same number, read from PostgreSQL when Prometheus scrapes.
QUEUE_TILES = Gauge("mfr_scorer_queue_tiles",
                    "Tiles of active scoring jobs not done yet (waiting or being scored)")


def export_queue_depth(read: Callable[[], int]) -> None:
    """Report ``read()`` at every scrape; NaN while the database does not answer."""

    def depth() -> float:
        try:
            return float(read())
        except Exception:  # noqa: BLE001 - a scrape must not fail because PostgreSQL is down
            return float("nan")

    QUEUE_TILES.set_function(depth)


class GiveUp(Exception):
    """The job was failed (reason recorded): do not run this task again."""


def coordination_lock(job_id: str) -> str:
    return f"scoring-job:{job_id}"


class Deferrer:
    """Puts tasks on the queue and takes them off, inside the caller's transaction."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.app = App(connector=SyncPsycopgConnector())
        self.app.open(pool)  # an external pool: opening it is the caller's business

    def _configure(self, task: str, conn: psycopg.Connection, **options: Any):
        return self.app.configure_task(task, queue=QUEUE, priority=PRIORITY[task],
                                       connection=conn, **options)

    def plan(self, conn: psycopg.Connection, job_id: str) -> int:
        return self._configure(PLAN, conn, lock=coordination_lock(job_id)).defer(job_id=job_id)

    def tiles(self, conn: psycopg.Connection, job_id: str, round_number: int,
              count: int) -> list[int]:
        if count == 0:
            return []
        return self._configure(TILE, conn).batch_defer(
            *({"job_id": job_id, "round": round_number, "ordinal": i} for i in range(count)))

    def merge(self, conn: psycopg.Connection, job_id: str, round_number: int) -> int:
        return self._configure(MERGE, conn, lock=coordination_lock(job_id)).defer(
            job_id=job_id, round=round_number)

    def cancel(self, conn: psycopg.Connection, task_ids: list[int]) -> int:
        """Cancel tasks still waiting (running ones notice their job's state); returns how many."""
        manager = self.app.job_manager
        return sum(manager.cancel_job_by_id(task_id, connection=conn) for task_id in task_ids)


class ScorerRetry(BaseRetryStrategy):
    """Retry everything but GiveUp; a task abandoned at shutdown goes back at once."""

    def __init__(self, wait_s: int) -> None:
        self.wait_s = wait_s

    def get_retry_decision(self, *, exception: BaseException, job: QueueJob) -> RetryDecision | None:
        if isinstance(exception, GiveUp):
            return None
        if isinstance(exception, (asyncio.CancelledError, queue_errors.JobAborted)):
            return RetryDecision(retry_in={"seconds": 0})
        return RetryDecision(retry_in={"seconds": self.wait_s})


async def _on_thread(handler: Handler, abandoned: threading.Event, name: str, **kwargs: Any):
    """Run ``handler`` on a daemon thread and await it; cancelling abandons the thread."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def deliver(outcome: Callable[[], None]) -> None:
        if not done.done():
            outcome()

    def target() -> None:
        try:
            result = handler(abandoned, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            failure = exc
            _call_soon(loop, deliver, lambda: done.set_exception(failure))
        else:
            _call_soon(loop, deliver, lambda: done.set_result(result))

    threading.Thread(target=target, name=name, daemon=True).start()
    try:
        return await done
    except asyncio.CancelledError:
        abandoned.set()
        raise


def _call_soon(loop: asyncio.AbstractEventLoop, function: Callable, *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(function, *args)
    except RuntimeError:  # the loop is gone: the worker stopped without waiting for us
        pass


def worker_app(database_url: str, handlers: dict[str, Handler], on_failure: FailureHook,
               retry_wait_s: int, pool_size: int = 4) -> App:
    """The worker's procrastinate app: the three tasks, each run on a thread."""
    app = App(connector=PsycopgConnector(conninfo=database_url, min_size=1, max_size=pool_size))
    retry = ScorerRetry(retry_wait_s)

    def register(task_name: str) -> None:
        handler = handlers[task_name]

        async def run(**kwargs: Any) -> None:
            abandoned = threading.Event()
            try:
                await _on_thread(handler, abandoned, task_name, **kwargs)
            except (asyncio.CancelledError, GiveUp):
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                log.warning("task failed", task=task_name, error=reason, **kwargs)
                gave_up = await _on_thread(lambda _a: on_failure(task_name, kwargs, reason),
                                           threading.Event(), f"{task_name}-failure")
                if gave_up:
                    raise GiveUp(reason) from exc
                raise

        app.task(name=task_name, queue=QUEUE, priority=PRIORITY[task_name], retry=retry)(run)

    for task_name in (PLAN, TILE, MERGE):
        register(task_name)
    return app


async def reap_stalled(app: App, stalled_s: float, on_failure: FailureHook) -> int:
    """Hand back the tasks of workers silent for ``stalled_s`` (killed, frozen, lost);
    each counts as a failure of its task. Returns how many were handed back."""
    handed_back = 0
    for task in await app.job_manager.get_stalled_jobs(queue=QUEUE,
                                                       seconds_since_heartbeat=stalled_s):
        try:
            await app.job_manager.retry_job(task)
        except queue_errors.ConnectorException:
            continue  # another worker handed it back first
        handed_back += 1
        reason = f"worker lost (no heartbeat for {stalled_s:g} s)"
        log.warning("stalled task handed back", task=task.task_name, task_id=task.id,
                    attempts=task.attempts, **task.task_kwargs)
        await asyncio.to_thread(on_failure, task.task_name, dict(task.task_kwargs), reason)
    return handed_back
