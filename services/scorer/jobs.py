"""Scoring jobs, rounds and tiles in PostgreSQL: the truth about what is done.

The queue (procrastinate, services/scorer/queue.py) only says what to run;
these rows say what counts. A tile is done when the UPDATE that sets its
``done_at`` succeeds, and that same UPDATE is the only place the round's
``tiles_done`` counter grows, so a tile finished twice counts once and
exactly one worker sees a round complete (docs/scoring-service.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from mfr.db.pool import row_field
from mfr.errors import NotFound
from mfr.jobs import ACTIVE, insert_once


@dataclass(frozen=True)
class JobRequest:
    """What SubmitJob asks for; its fingerprint makes SubmitJob idempotent."""

    job_id: str
    features_bucket: str
    features_key: str
    features_sha256: str
    testset_id: str
    challenge_toml: str

    @property
    def fingerprint(self) -> str:
        fields = [self.features_bucket, self.features_key, self.features_sha256,
                  self.testset_id, self.challenge_toml]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


@dataclass(frozen=True)
class JobView:
    """A job as callers see it: state, progress over every round planned so far, result."""

    row: dict[str, Any]
    tiles_done: int
    tiles_total: int
    pairs_done: int
    pairs_total: int
    scoring_s: float | None  # seconds since the first tile started

    id = row_field("id")
    state = row_field("state")
    stage = row_field("stage")

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def rates(self) -> tuple[float, float, float]:
        """(tiles/s, pairs/s, ETA in seconds; -1 when unknown) since scoring started."""
        if not self.scoring_s or self.pairs_done <= 0:
            return 0.0, 0.0, -1.0
        pairs_rate = self.pairs_done / self.scoring_s
        eta = (self.pairs_total - self.pairs_done) / pairs_rate if self.active else 0.0
        return self.tiles_done / self.scoring_s, pairs_rate, eta


@dataclass(frozen=True)
class TileRow:
    job_id: str
    round: int
    ordinal: int
    tile_key: str
    pairs: int
    partial_key: str
    plan_key: str
    done: bool
    failures: int


_VIEW = """
    SELECT j.*, coalesce(sum(r.tiles_done), 0) AS tiles_done,
           coalesce(sum(r.tiles_total), 0) AS tiles_total,
           coalesce(sum(r.pairs_done), 0) AS pairs_done,
           coalesce(sum(r.pairs_total), 0) AS pairs_total,
           extract(epoch FROM coalesce(j.finished_at, now()) - j.scoring_started_at) AS scoring_s
      FROM scoring_jobs j LEFT JOIN scoring_rounds r ON r.job_id = j.id
     WHERE j.id = %s GROUP BY j.id"""


class JobBook:
    """Reads and writes the scoring tables. Methods taking ``conn`` join the caller's transaction."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    # --- jobs ------------------------------------------------------------------
    def create(self, conn: psycopg.Connection, request: JobRequest) -> bool:
        """Insert the job unless it exists (True when inserted); another request under
        the same id is a Conflict."""
        return insert_once(conn, "scoring_jobs", {
            "id": request.job_id, "features_bucket": request.features_bucket,
            "features_key": request.features_key, "features_sha256": request.features_sha256,
            "testset_id": request.testset_id, "challenge_toml": request.challenge_toml,
            "request_sha256": request.fingerprint})

    def view(self, job_id: str) -> JobView:
        with self.pool.connection() as conn:
            row = conn.execute(_VIEW, (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no scoring job {job_id}", code="job_not_found")
        counts = {k: int(row.pop(k)) for k in ("tiles_done", "tiles_total", "pairs_done",
                                               "pairs_total")}
        scoring_s = row.pop("scoring_s")
        return JobView(row, **counts, scoring_s=float(scoring_s) if scoring_s else None)

    def job(self, job_id: str, conn: psycopg.Connection | None = None,
            for_update: bool = False) -> dict[str, Any]:
        query = "SELECT * FROM scoring_jobs WHERE id = %s" + (" FOR UPDATE" if for_update else "")
        if conn is None:
            with self.pool.connection() as own:
                row = own.execute(query, (job_id,)).fetchone()
        else:
            row = conn.execute(query, (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no scoring job {job_id}", code="job_not_found")
        return row

    def set_stage(self, job_id: str, stage: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE scoring_jobs SET stage = %s, updated_at = now()"
                         " WHERE id = %s AND state IN ('queued', 'running')", (stage, job_id))

    def mark_running(self, job_id: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE scoring_jobs SET state = 'running', updated_at = now(),"
                         " scoring_started_at = coalesce(scoring_started_at, now())"
                         " WHERE id = %s AND state = 'queued'", (job_id,))

    def set_plan_task(self, conn: psycopg.Connection, job_id: str, task_id: int) -> None:
        conn.execute("UPDATE scoring_jobs SET plan_task_id = %s WHERE id = %s", (task_id, job_id))

    def stop(self, conn: psycopg.Connection, job_id: str, state: str, error_code: str = "",
             error: str = "") -> list[int] | None:
        """End an active job (failed or cancelled); returns the queue tasks to cancel,
        or None when the job had already ended."""
        ended = conn.execute(
            "UPDATE scoring_jobs SET state = %s, stage = %s, error_code = %s, error = %s,"
            " updated_at = now(), finished_at = now()"
            " WHERE id = %s AND state IN ('queued', 'running') RETURNING plan_task_id, round",
            (state, state, error_code or None, error or None, job_id)).fetchone()
        if ended is None:
            return None
        tasks = [ended["plan_task_id"]] if ended["round"] == 0 else []
        tasks += [r["task_id"] for r in conn.execute(
            "SELECT task_id FROM scoring_tiles WHERE job_id = %s AND done_at IS NULL", (job_id,))]
        tasks += [r["merge_task_id"] for r in conn.execute(
            "SELECT merge_task_id FROM scoring_rounds WHERE job_id = %s AND merged_at IS NULL",
            (job_id,))]
        return [t for t in tasks if t is not None]

    def finish(self, conn: psycopg.Connection, job_id: str, scores: dict,
               ranking: tuple[float, str] | None, result: dict) -> None:
        """Record the final scores ({protocol id: result JSON}, in the challenge's order)."""
        conn.execute(
            "UPDATE scoring_jobs SET state = 'done', stage = 'done', scores = %s,"
            " ranking_score = %s, ranking_exact = %s, result_bucket = %s, result_key = %s,"
            " result_sha256 = %s, result_size = %s, updated_at = now(), finished_at = now()"
            " WHERE id = %s",
            # A list, not an object: jsonb does not keep the order of keys.
            (Jsonb([{"protocol_id": pid, **score} for pid, score in scores.items()]),
             *(ranking or (None, None)), result["bucket"], result["key"],
             result["sha256"], result["size"], job_id))

    def record_step_failure(self, job_id: str, error: str) -> int:
        with self.pool.connection() as conn:
            row = conn.execute("UPDATE scoring_jobs SET step_failures = step_failures + 1,"
                               " updated_at = now() WHERE id = %s RETURNING step_failures",
                               (job_id,)).fetchone()
        return row["step_failures"] if row else 0

    # --- rounds and tiles ---------------------------------------------------------
    def add_round(self, conn: psycopg.Connection, job_id: str, round_number: int, plan_key: str,
                  plan_digest: str, tiles: list[tuple[str, int, str]]) -> None:
        """Record a planned round and its tiles ``(tile_key, pairs, partial_key)`` in plan order."""
        conn.execute(
            "INSERT INTO scoring_rounds (job_id, round, plan_key, plan_digest, tiles_total,"
            " pairs_total) VALUES (%s, %s, %s, %s, %s, %s)",
            (job_id, round_number, plan_key, plan_digest, len(tiles), sum(t[1] for t in tiles)))
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO scoring_tiles (job_id, round, ordinal, tile_key, pairs, partial_key)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                [(job_id, round_number, i, key, pairs, partial)
                 for i, (key, pairs, partial) in enumerate(tiles)])
        conn.execute("UPDATE scoring_jobs SET round = %s, stage = 'scoring', updated_at = now()"
                     " WHERE id = %s", (round_number, job_id))

    def set_tile_tasks(self, conn: psycopg.Connection, job_id: str, round_number: int,
                       task_ids: list[int]) -> None:
        conn.execute(
            "UPDATE scoring_tiles t SET task_id = u.task"
            " FROM unnest(%s::bigint[]) WITH ORDINALITY AS u(task, n)"
            " WHERE t.job_id = %s AND t.round = %s AND t.ordinal = u.n - 1",
            (task_ids, job_id, round_number))

    def round(self, job_id: str, round_number: int) -> dict[str, Any]:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT * FROM scoring_rounds WHERE job_id = %s AND round = %s",
                               (job_id, round_number)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} has no round {round_number}", code="round_not_found")
        return row

    def tile(self, job_id: str, round_number: int, ordinal: int) -> TileRow:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT t.job_id, t.round, t.ordinal, t.tile_key, t.pairs, t.partial_key,"
                " r.plan_key, t.done_at IS NOT NULL AS done, t.failures"
                " FROM scoring_tiles t JOIN scoring_rounds r USING (job_id, round)"
                " WHERE t.job_id = %s AND t.round = %s AND t.ordinal = %s",
                (job_id, round_number, ordinal)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} round {round_number} has no tile {ordinal}",
                           code="tile_not_found")
        return TileRow(**row)

    def complete_tile(self, conn: psycopg.Connection, tile: TileRow, worker: str,
                      partial_sha256: str, compute_s: float, step_s: float) -> bool:
        """Mark the tile done (once); True when this call completed its round."""
        marked = conn.execute(
            "UPDATE scoring_tiles SET done_at = now(), done_by = %s, partial_sha256 = %s,"
            " compute_s = %s, step_s = %s"
            " WHERE job_id = %s AND round = %s AND ordinal = %s AND done_at IS NULL"
            " RETURNING pairs",
            (worker, partial_sha256, compute_s, step_s, tile.job_id, tile.round,
             tile.ordinal)).fetchone()
        if marked is None:
            return False  # done before (a retried or duplicated task): counts once
        counted = conn.execute(
            "UPDATE scoring_rounds SET tiles_done = tiles_done + 1, pairs_done = pairs_done + %s"
            " WHERE job_id = %s AND round = %s RETURNING tiles_done, tiles_total",
            (marked["pairs"], tile.job_id, tile.round)).fetchone()
        return counted["tiles_done"] == counted["tiles_total"]

    def record_tile_failure(self, job_id: str, round_number: int, ordinal: int,
                            error: str) -> int:
        with self.pool.connection() as conn:
            row = conn.execute(
                "UPDATE scoring_tiles SET failures = failures + 1, last_error = %s"
                " WHERE job_id = %s AND round = %s AND ordinal = %s RETURNING failures",
                (error[:2000], job_id, round_number, ordinal)).fetchone()
        return row["failures"] if row else 0

    def set_merge_task(self, conn: psycopg.Connection, job_id: str, round_number: int,
                       task_id: int) -> None:
        conn.execute("UPDATE scoring_rounds SET merge_task_id = %s WHERE job_id = %s"
                     " AND round = %s", (task_id, job_id, round_number))

    def partial_keys(self, job_id: str, round_number: int) -> list[str]:
        with self.pool.connection() as conn:
            return [r["partial_key"] for r in conn.execute(
                "SELECT partial_key FROM scoring_tiles WHERE job_id = %s AND round = %s"
                " AND done_at IS NOT NULL ORDER BY ordinal", (job_id, round_number))]

    def save_round_results(self, conn: psycopg.Connection, job_id: str, round_number: int,
                           results: dict) -> bool:
        """Record a round's merge (once): False when it was merged before."""
        return conn.execute(
            "UPDATE scoring_rounds SET results = %s, merged_at = now()"
            " WHERE job_id = %s AND round = %s AND merged_at IS NULL RETURNING round",
            (Jsonb(results), job_id, round_number)).fetchone() is not None

    def proven_results(self, conn: psycopg.Connection, job_id: str) -> dict[str, dict]:
        """Results of every merged round of the job, by protocol id."""
        merged: dict[str, dict] = {}
        for row in conn.execute("SELECT results FROM scoring_rounds WHERE job_id = %s"
                                " AND merged_at IS NOT NULL ORDER BY round", (job_id,)):
            merged.update(row["results"] or {})
        return merged

    def totals(self, job_id: str) -> dict[str, int]:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT count(*) AS rounds, sum(tiles_total) AS tiles,"
                               " sum(pairs_total) AS pairs FROM scoring_rounds WHERE job_id = %s",
                               (job_id,)).fetchone()
        return {k: int(v or 0) for k, v in row.items()}

    # --- the queue's depth ----------------------------------------------------------
    def tiles_waiting(self) -> int:
        """Tiles of active jobs not done yet (waiting or being scored): the autoscaling signal."""
        with self.pool.connection(timeout=2) as conn:
            row = conn.execute(
                "SELECT count(*) AS n FROM scoring_tiles t JOIN scoring_jobs j ON j.id = t.job_id"
                " WHERE t.done_at IS NULL AND j.state IN ('queued', 'running')").fetchone()
        return int(row["n"])
