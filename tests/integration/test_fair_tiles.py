"""Scoring tiles are shared fairly between jobs: a big job never holds every worker."""

from __future__ import annotations

import pytest

from services.scorer.queue import PRIORITY, QUEUE, TILE, Deferrer

pytestmark = pytest.mark.integration


def _next_tiles(pool, n: int) -> list[tuple[str, int]]:
    """The order in which workers take waiting tiles (procrastinate: priority, then id)."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT args FROM procrastinate_jobs WHERE queue_name = %s AND task_name = %s"
            " AND status = 'todo' ORDER BY priority DESC, id LIMIT %s", (QUEUE, TILE, n)).fetchall()
    return [(r["args"]["job_id"], r["args"]["ordinal"]) for r in rows]


def test_a_later_job_shares_the_workers_with_an_earlier_big_one(db_pool):
    deferrer = Deferrer(db_pool)
    with db_pool.connection() as conn:
        deferrer.tiles(conn, "big", 1, 6)
    with db_pool.connection() as conn:
        deferrer.tiles(conn, "small", 1, 2)
    assert _next_tiles(db_pool, 8) == [("big", 0), ("small", 0), ("big", 1), ("small", 1),
                                       ("big", 2), ("big", 3), ("big", 4), ("big", 5)]
    with db_pool.connection() as conn:  # the big job's first tiles are taken meanwhile
        conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE args->>'job_id' = 'big'"
                     " AND (args->>'ordinal')::int < 3")
        deferrer.tiles(conn, "late", 1, 1)
    # The clock is the first waiting key (small's 0): the newcomer queues beside it.
    assert _next_tiles(db_pool, 4) == [("small", 0), ("late", 0), ("small", 1), ("big", 3)]


def test_plan_and_merge_still_go_before_any_tile(db_pool):
    deferrer = Deferrer(db_pool)
    with db_pool.connection() as conn:
        deferrer.tiles(conn, "job", 1, 3)
        deferrer.merge(conn, "other", 1)
    with db_pool.connection() as conn:
        first = conn.execute("SELECT task_name, priority FROM procrastinate_jobs"
                             " ORDER BY priority DESC, id LIMIT 1").fetchone()
    assert (first["task_name"], first["priority"]) == ("scorer.merge", PRIORITY["scorer.merge"])
