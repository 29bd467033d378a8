"""The tile queue: procrastinate tasks on PostgreSQL (docs/scoring-service.md).

Three tasks, on one queue: ``scorer.plan`` (a new job: fetch, check, plan,
enqueue round 1), ``scorer.tile`` (one tile of the fixed grid), and
``scorer.merge`` (a round's exact merge: the final result, or the next round).
Plan and merge run before waiting tiles (priority) and never two at once for
one job (a procrastinate lock). Tiles are fair across jobs (start-time fair
queuing, :meth:`mfr.taskqueue.TaskDeferrer.fair_clock`): a new job's k-th tile
is ranked beside the k-th waiting tile of the jobs before it, so a large job
never holds every worker while another participant's job waits.

Deferral is synchronous and takes the caller's connection, so a job's rows in
scoring_* and its tasks appear in one transaction or not at all. The workers'
side (tasks on threads, retries, stalled workers) is :mod:`mfr.taskqueue`.
"""

from __future__ import annotations

from typing import Any

import psycopg

from mfr.taskqueue import TaskDeferrer

QUEUE = "scorer"
PLAN = "scorer.plan"
TILE = "scorer.tile"
MERGE = "scorer.merge"
# Plan and merge first: a finished round should not wait behind another job's tiles.
PRIORITY = {PLAN: 10, MERGE: 20, TILE: 0}

#: The autoscaling signal (mfr.queue_depth), reported by the scorer API and every worker.
QUEUE_TILES = ("mfr_scorer_queue_tiles",
               "Tiles of active scoring jobs not done yet (waiting or being scored)")


def coordination_lock(job_id: str) -> str:
    return f"scoring-job:{job_id}"


class Deferrer(TaskDeferrer):
    """Puts tasks on the queue and takes them off, inside the caller's transaction."""

    def _configure(self, task: str, conn: psycopg.Connection, **options: Any):
        options.setdefault("priority", PRIORITY[task])
        return self.task(task, conn, queue=QUEUE, **options)

    def plan(self, conn: psycopg.Connection, job_id: str) -> int:
        return self._configure(PLAN, conn, lock=coordination_lock(job_id)).defer(job_id=job_id)

    def tiles(self, conn: psycopg.Connection, job_id: str, round_number: int,
              count: int) -> list[int]:
        if count == 0:
            return []
        clock = self.fair_clock(conn, QUEUE, TILE)
        return [self._configure(TILE, conn, priority=-(clock + i)).defer(
                    job_id=job_id, round=round_number, ordinal=i) for i in range(count)]

    def merge(self, conn: psycopg.Connection, job_id: str, round_number: int) -> int:
        return self._configure(MERGE, conn, lock=coordination_lock(job_id)).defer(
            job_id=job_id, round=round_number)
