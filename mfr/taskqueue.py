"""Queue workers on procrastinate (PostgreSQL): the plumbing every queue shares.

Tasks are synchronous domain code. A worker runs procrastinate's asyncio
worker on a thread of its own (the process's background part, see
``mfr.rpc.process``); each task's body runs on a further daemon thread, so
heartbeats go on while BLAS or onnxruntime works, and a task abandoned at
shutdown is handed back to the queue at once while its thread is left to die
with the process.

What procrastinate does not do for us is decide when a task has failed for
good: a queue's handlers count failures in their own tables (a stalled
worker's task counts too) and raise :class:`GiveUp` once the job has been
failed, the only exception the retry strategy does not retry.

A task carries the request id of whoever deferred it (the gRPC call that submitted
the job, or the task that deferred this one) as one more argument, ``request_id``,
added by :class:`Deferral` and taken off by the worker, which binds it to the log
context while the task, its failure hook and the tasks it defers run. It is an
ordinary argument, so a retry or a stalled task handed back keeps it; locks and
queueing locks are options, not arguments, and do not see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from procrastinate import App, PsycopgConnector, SyncPsycopgConnector
from procrastinate import exceptions as queue_errors
from procrastinate.jobs import Job as QueueJob
from procrastinate.jobs import JobDeferrer
from procrastinate.retry import BaseRetryStrategy, RetryDecision
from structlog.contextvars import bound_contextvars

from mfr.logs import REQUEST_ID, current_request_id, get_logger

log = get_logger("mfr.taskqueue")

#: handler(abandoned, **task_kwargs): runs on a thread; ``abandoned`` is set when the
#: worker gave the task back (shutdown) and the handler should stop without committing.
Handler = Callable[..., Any]
#: on_failure(task_name, task_kwargs, reason) -> True when the job was failed for good.
FailureHook = Callable[[str, dict, str], bool]


def with_request_id(task_kwargs: dict) -> dict:
    """A task's arguments plus the request id of the log context, when there is one."""
    request_id = current_request_id()
    return {**task_kwargs, REQUEST_ID: request_id} if request_id else dict(task_kwargs)


def split_request_id(task_kwargs: dict) -> tuple[dict, dict]:
    """(what to bind to the log context, the task's own arguments)."""
    own = dict(task_kwargs)
    request_id = own.pop(REQUEST_ID, None)
    return ({REQUEST_ID: request_id} if isinstance(request_id, str) else {}), own


class Deferral:
    """A task configured for one deferral (queue, priority, lock, connection) whose
    arguments get the caller's request id."""

    def __init__(self, deferrer: JobDeferrer) -> None:
        self._deferrer = deferrer

    def defer(self, **task_kwargs: Any) -> int:
        return self._deferrer.defer(**with_request_id(task_kwargs))


class TaskDeferrer:
    """Puts tasks on a queue and takes them off, inside the caller's transaction (so a job's
    rows and its tasks appear together or not at all). Each queue subclasses it and defers
    through :meth:`task`, never ``app.configure_task``, so every task carries its trail."""

    def __init__(self, pool) -> None:
        self.app = App(connector=SyncPsycopgConnector())
        self.app.open(pool)  # an external pool: opening it is the caller's business

    def task(self, task_name: str, conn, **options: Any) -> Deferral:
        """``task_name`` configured with ``options`` (queue, priority, lock...), deferred in
        ``conn``'s transaction."""
        return Deferral(self.app.configure_task(task_name, connection=conn, **options))

    @staticmethod
    def fair_clock(conn, queue: str, task_name: str) -> int:
        """Start-time fair queuing's virtual time for ``task_name`` on ``queue``: the fair key
        of the next waiting task (its priority is minus its key; 0 when none waits). A new
        job's k-th task gets ``clock + k``, so it shares the workers equally with the jobs
        already waiting instead of queuing behind all their tasks."""
        row = conn.execute(
            "SELECT -max(priority) AS clock FROM procrastinate_jobs"
            " WHERE queue_name = %s AND task_name = %s AND status = 'todo'",
            (queue, task_name)).fetchone()
        clock = row["clock"] if isinstance(row, dict) else row[0]
        return max(0, int(clock or 0))

    def cancel(self, conn, task_ids: list[int]) -> int:
        """Cancel tasks still waiting (running ones notice their job's state); returns how many."""
        manager = self.app.job_manager
        return sum(manager.cancel_job_by_id(task_id, connection=conn) for task_id in task_ids)


class GiveUp(Exception):
    """The job was failed (reason recorded): do not run this task again."""


class RetryUnlessGivenUp(BaseRetryStrategy):
    """Retry everything but GiveUp; a task abandoned at shutdown goes back at once."""

    def __init__(self, wait_s: int) -> None:
        self.wait_s = wait_s

    def get_retry_decision(self, *, exception: BaseException, job: QueueJob) -> RetryDecision | None:
        if isinstance(exception, GiveUp):
            return None
        if isinstance(exception, (asyncio.CancelledError, queue_errors.JobAborted)):
            return RetryDecision(retry_in={"seconds": 0})
        return RetryDecision(retry_in={"seconds": self.wait_s})


async def on_thread(handler: Handler, abandoned: threading.Event, name: str, **kwargs: Any):
    """Run ``handler`` on a daemon thread and await it; cancelling abandons the thread. The
    thread runs in a copy of the caller's context (its log context: the request id)."""
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

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(target,), name=name, daemon=True).start()
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


#: deadline(task_name, task_kwargs) -> seconds the task may run (None: no limit). Past it
#: the task is abandoned and counted as a failure, even if its worker still sends heartbeats.
Deadline = Callable[[str, dict], float | None]


@dataclass(frozen=True)
class QueueSpec:
    """What a worker drains: its queues, the handlers, the failure hook and the tasks'
    deadlines (the priorities are the deferrer's: a worker never defers)."""

    queues: tuple[str, ...]
    handlers: dict[str, Handler]
    on_failure: FailureHook
    deadline: Deadline = lambda _task, _kwargs: None


def worker_app(database_url: str, spec: QueueSpec, retry_wait_s: int, pool_size: int = 4) -> App:
    """A worker's procrastinate app: each task of ``spec`` run on a thread."""
    app = App(connector=PsycopgConnector(conninfo=database_url, min_size=1, max_size=pool_size))
    retry = RetryUnlessGivenUp(retry_wait_s)

    def register(task_name: str, handler: Handler) -> None:
        async def run(**task_kwargs: Any) -> None:
            trail, kwargs = split_request_id(task_kwargs)
            with bound_contextvars(**trail):
                await run_bound(kwargs)

        async def run_bound(kwargs: dict) -> None:
            abandoned = threading.Event()
            # A deadline may read the database: off the event loop, which sends the heartbeats.
            limit = await asyncio.to_thread(spec.deadline, task_name, kwargs)
            try:
                await asyncio.wait_for(on_thread(handler, abandoned, task_name, **kwargs), limit)
            except (asyncio.CancelledError, GiveUp):
                raise
            except Exception as exc:
                reason = (f"no result within its deadline of {limit:g} s (the worker lives on)"
                          if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}")
                log.warning("task failed", task=task_name, error=reason, **kwargs)
                gave_up = await on_thread(lambda _a: spec.on_failure(task_name, kwargs, reason),
                                          threading.Event(), f"{task_name}-failure")
                if gave_up:
                    raise GiveUp(reason) from exc
                raise

        app.task(name=task_name, queue=spec.queues[0], retry=retry)(run)

    for task_name, handler in spec.handlers.items():
        register(task_name, handler)
    return app


async def reap_stalled(app: App, queues: tuple[str, ...], stalled_s: float,
                       on_failure: FailureHook) -> int:
    """Hand back the tasks of workers silent for ``stalled_s`` (killed, frozen, lost);
    each counts as a failure of its task. Returns how many were handed back."""
    handed_back = 0
    stalled = [task for queue in queues for task in await app.job_manager.get_stalled_jobs(
        queue=queue, seconds_since_heartbeat=stalled_s)]
    for task in stalled:
        try:
            await app.job_manager.retry_job(task)
        except queue_errors.ConnectorException:
            continue  # another worker handed it back first
        handed_back += 1
        reason = f"worker lost (no heartbeat for {stalled_s:g} s)"
        trail, kwargs = split_request_id(task.task_kwargs)
        with bound_contextvars(**trail):
            log.warning("stalled task handed back", task=task.task_name, task_id=task.id,
                        attempts=task.attempts, **kwargs)
            await asyncio.to_thread(on_failure, task.task_name, kwargs, reason)
    return handed_back


@dataclass(frozen=True)
class WorkerTiming:
    heartbeat_s: float  # heartbeat period of this worker
    stalled_s: float  # silence after which another worker hands a task back
    reap_every_s: float  # how often this worker looks for stalled tasks
    poll_s: float  # queue polling when no notification arrives


class QueueWorker:
    """The background part of a worker process: one task at a time from one queue."""

    def __init__(self, app: App, spec: QueueSpec, name: str, timing: WorkerTiming,
                 grace_s: float) -> None:
        self.app = app
        self.spec = spec
        self.name = name
        self.timing = timing
        self.grace_s = grace_s  # a running task's time to finish at shutdown
        self._thread = threading.Thread(target=self._run, name="queue-worker", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self.ended_on_its_own = False

    def start(self) -> None:
        self._thread.start()
        self._started.wait(30)

    def stop(self, grace: float) -> None:
        if self._loop is not None and self._stop is not None:
            _call_soon(self._loop, self._stop.set)
        self._thread.join(max(grace, self.grace_s) + 5)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        async with self.app.open_async():
            worker = asyncio.create_task(self.app.run_worker_async(
                queues=list(self.spec.queues), name=self.name, concurrency=1,
                install_signal_handlers=False,
                shutdown_graceful_timeout=self.grace_s,
                update_heartbeat_interval=self.timing.heartbeat_s,
                stalled_worker_timeout=self.timing.stalled_s,
                fetch_job_polling_interval=self.timing.poll_s, delete_jobs="successful"))
            reaper = asyncio.create_task(self._reap_forever())
            stopping = asyncio.create_task(self._stop.wait())
            await asyncio.wait({worker, stopping}, return_when=asyncio.FIRST_COMPLETED)
            reaper.cancel()
            self.ended_on_its_own = worker.done()
            worker.cancel()  # stop fetching; the running task finishes or is handed back
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            stopping.cancel()
        if self.ended_on_its_own:
            log.error("worker loop ended on its own (database lost?)", worker=self.name)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.timing.reap_every_s)
            try:
                await reap_stalled(self.app, self.spec.queues, self.timing.stalled_s,
                                   self.spec.on_failure)
            except Exception as exc:  # noqa: BLE001 - the next round may succeed
                log.warning("reaping stalled tasks failed", error=str(exc))
