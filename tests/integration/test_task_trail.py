"""Queue tasks carry the request id of whoever deferred them (mfr/taskqueue.py): the worker
runs each task, its retries, its failure hook and the tasks it defers under that id, and
hands the task its own arguments only. Real PostgreSQL, a real procrastinate worker."""

from __future__ import annotations

import threading
import time

import pytest
import structlog
from structlog.contextvars import bound_contextvars
from structlog.testing import capture_logs

from mfr.logs import current_request_id, get_logger
from mfr.taskqueue import QueueSpec, QueueWorker, TaskDeferrer, WorkerTiming, worker_app

pytestmark = pytest.mark.integration
QUEUE = "trail"
log = get_logger("tests.trail")


class Tasks:
    """Two tasks: ``first`` fails once, then defers ``second``; both note what they saw."""

    def __init__(self, deferrer: TaskDeferrer, pool) -> None:
        self.deferrer, self.pool = deferrer, pool
        self.seen: list[tuple[str, dict, str | None]] = []
        self.failures: list[tuple[str, dict, str | None]] = []
        self.changed = threading.Condition()

    def _note(self, into: list, entry: tuple) -> None:
        with self.changed:
            into.append(entry)
            self.changed.notify_all()

    def first(self, _abandoned, n: int) -> None:
        self._note(self.seen, ("first", {"n": n}, current_request_id()))
        if len([s for s in self.seen if s[0] == "first"]) == 1:
            raise RuntimeError("flaky once")
        with self.pool.connection() as conn:
            self.deferrer.task("trail.second", conn, queue=QUEUE).defer(n=n + 1)

    def second(self, _abandoned, n: int) -> None:
        log.info("second ran", n=n)
        self._note(self.seen, ("second", {"n": n}, current_request_id()))

    def on_failure(self, task_name: str, kwargs: dict, _reason: str) -> bool:
        self._note(self.failures, (task_name, dict(kwargs), current_request_id()))
        return False  # not given up: retried

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.seen) < count:
                assert self.changed.wait(max(0.0, deadline - time.monotonic())), self.seen


def test_a_task_its_retry_and_the_task_it_defers_run_under_the_deferrers_id(db_pool, database):
    deferrer = TaskDeferrer(db_pool)
    tasks = Tasks(deferrer, db_pool)
    spec = QueueSpec((QUEUE,), {"trail.first": tasks.first, "trail.second": tasks.second},
                     tasks.on_failure)
    with db_pool.connection() as conn:
        with bound_contextvars(request_id="upload-11"):
            deferrer.task("trail.first", conn, queue=QUEUE, lock="trail-lock").defer(n=1)
        deferrer.task("trail.second", conn, queue=QUEUE, priority=-1).defer(n=0)  # no trail
    with db_pool.connection() as conn:
        args = [r["args"] for r in conn.execute("SELECT args FROM procrastinate_jobs ORDER BY id")]
    # What an operator reading the queue's table sees: the id beside the task's arguments.
    assert args == [{"n": 1, "request_id": "upload-11"}, {"n": 0}]

    worker = QueueWorker(worker_app(database.schema_url, spec, retry_wait_s=0), spec,
                         "trail-worker", WorkerTiming(1.0, 30.0, 60.0, 0.1), grace_s=1.0)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        worker.start()
        try:
            tasks.wait_for(4)
        finally:
            worker.stop(1.0)
    assert tasks.seen == [("first", {"n": 1}, "upload-11"),  # failed, handed to the hook
                          ("first", {"n": 1}, "upload-11"),  # the retry keeps its id
                          ("second", {"n": 2}, "upload-11"),  # deferred by a task: inherited
                          ("second", {"n": 0}, None)]  # deferred outside any request
    assert tasks.failures == [("trail.first", {"n": 1}, "upload-11")]
    failed = [e for e in logs if e["event"] == "task failed"]
    assert [(e["request_id"], e["n"]) for e in failed] == [("upload-11", 1)]
    ran = [(e["n"], e.get("request_id")) for e in logs if e["event"] == "second ran"]
    assert ran == [(2, "upload-11"), (0, None)]
