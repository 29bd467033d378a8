"""Embedding jobs and their shards in PostgreSQL: the truth about what is done.

The queue (procrastinate, services/embedder/queue.py) only says what to run;
these rows say what counts. A shard is done when the UPDATE that sets its
``done_at`` succeeds, and that same UPDATE is the only place the job's
``shards_done`` grows, so a shard finished twice (a worker thought lost was only
slow) counts once and exactly one worker sees the job complete.
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
from mfr.storage import ObjectRef


@dataclass(frozen=True)
class EmbedRequest:
    """What SubmitJob asks for (the model's sha256 is required); its fingerprint makes
    SubmitJob idempotent."""

    job_id: str
    model: ObjectRef
    testset_id: str
    normalisation: tuple[float, float]  # (input_mean, input_std)
    features: ObjectRef
    runtime: str
    batch_size: int
    shard_deadline_s: float
    owner: str = ""

    def columns(self) -> dict[str, Any]:
        """The request as embedding_jobs columns (without the id)."""
        return {"owner": self.owner, "model_bucket": self.model.bucket,
                "model_key": self.model.key, "model_sha256": self.model.sha256,
                "testset_id": self.testset_id, "input_mean": self.normalisation[0],
                "input_std": self.normalisation[1], "features_bucket": self.features.bucket,
                "features_key": self.features.key, "runtime": self.runtime,
                "batch_size": self.batch_size, "shard_deadline_s": self.shard_deadline_s}

    @property
    def fingerprint(self) -> str:
        fields = {k: v for k, v in self.columns().items() if k != "owner"}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ShardRow:
    job_id: str
    shard: int
    images: int
    batch_size: int
    failures: int
    done: bool


@dataclass(frozen=True)
class JobView:
    """A job as callers see it: its row and how fast it goes."""

    row: dict[str, Any]
    running_s: float | None  # since the first shard started

    id = row_field("id")
    state = row_field("state")

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def rates(self) -> tuple[float, float]:
        """(images/s, ETA in seconds; -1 when unknown) since the first shard started."""
        done = self.row["images_done"]
        if not self.running_s or done <= 0:
            return 0.0, -1.0
        rate = done / self.running_s
        return rate, ((self.row["images_total"] - done) / rate if self.active else 0.0)


class JobBook:
    """Reads and writes the embedding tables. Methods taking ``conn`` join its transaction."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    # --- jobs ------------------------------------------------------------------------
    def create(self, conn: psycopg.Connection, request: EmbedRequest,
               shards: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
        """Insert the job and its shards ((index, images) each) unless it exists; returns the
        shards' (index, fair key) when inserted, None when the job was there already.
        Another request under the same id is a Conflict."""
        values = {**request.columns(), "id": request.job_id, "request_sha256": request.fingerprint,
                  "shards_total": len(shards), "images_total": sum(n for _, n in shards)}
        if not insert_once(conn, "embedding_jobs", values):
            return None
        start = self.fair_clock(conn)
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO embedding_shards (job_id, shard, images, fair_key, batch_size)"
                " VALUES (%s, %s, %s, %s, %s)",
                [(request.job_id, index, images, start + index, request.batch_size)
                 for index, images in shards])
        return [(index, start + index) for index, _ in shards]

    @staticmethod
    def fair_clock(conn: psycopg.Connection) -> int:
        """Start-time fair queuing's virtual time: the fair key of the next shard to run
        (0 when nothing waits). A new job's shard k gets ``clock + k``, so it shares the
        workers equally with the jobs already waiting instead of queuing behind them."""
        row = conn.execute(
            "SELECT min(s.fair_key) AS clock FROM embedding_shards s"
            " JOIN embedding_jobs j ON j.id = s.job_id"
            " WHERE s.started_at IS NULL AND j.state IN ('queued', 'running')").fetchone()
        return int(row["clock"] or 0)

    def view(self, job_id: str) -> JobView:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT *, extract(epoch FROM coalesce(finished_at, now()) - started_at)"
                " AS running_s FROM embedding_jobs WHERE id = %s", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no embedding job {job_id}", code="job_not_found")
        running_s = row.pop("running_s")
        return JobView(row, float(running_s) if running_s is not None else None)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.view(job_id).row

    def stop(self, conn: psycopg.Connection, job_id: str, state: str, error_code: str = "",
             error: str = "") -> list[int] | None:
        """End an active job (failed or cancelled); returns the queue tasks to cancel, or
        None when it had already ended."""
        ended = conn.execute(
            "UPDATE embedding_jobs SET state = %s, error_code = %s, error = %s,"
            " updated_at = now(), finished_at = now()"
            " WHERE id = %s AND state IN ('queued', 'running') RETURNING assemble_task_id",
            (state, error_code or None, error or None, job_id)).fetchone()
        if ended is None:
            return None
        tasks = [r["task_id"] for r in conn.execute(
            "SELECT task_id FROM embedding_shards WHERE job_id = %s AND done_at IS NULL",
            (job_id,))]
        return [t for t in [*tasks, ended["assemble_task_id"]] if t is not None]

    def finish(self, job_id: str, features: dict, feature_dim: int,
               non_finite_rows: int) -> bool:
        """Record the written features; False when the job ended meanwhile (cancelled)."""
        with self.pool.connection() as conn:
            return conn.execute(
                "UPDATE embedding_jobs SET state = 'done', feature_dim = %s,"
                " non_finite_rows = %s, features_sha256 = %s, features_size = %s,"
                " updated_at = now(), finished_at = now()"
                " WHERE id = %s AND state = 'running'",
                (feature_dim, non_finite_rows, features["sha256"], features["size"], job_id)
            ).rowcount == 1

    def use_runtime(self, job_id: str, runtime: dict) -> dict:
        """The runtime the job runs on: the first shard's, recorded once; later shards must
        run on the same (one job never mixes runtimes)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "UPDATE embedding_jobs SET runtime_used = coalesce(runtime_used, %s)"
                " WHERE id = %s RETURNING runtime_used", (Jsonb(runtime), job_id)).fetchone()
        return row["runtime_used"] if row else runtime

    def set_assemble_task(self, conn: psycopg.Connection, job_id: str, task_id: int) -> None:
        conn.execute("UPDATE embedding_jobs SET assemble_task_id = %s WHERE id = %s",
                     (task_id, job_id))

    # --- shards ----------------------------------------------------------------------
    def set_shard_tasks(self, conn: psycopg.Connection, job_id: str,
                        task_ids: list[int]) -> None:
        with conn.cursor() as cursor:
            cursor.executemany(
                "UPDATE embedding_shards SET task_id = %s WHERE job_id = %s AND shard = %s",
                [(task_id, job_id, index) for index, task_id in enumerate(task_ids)])

    def shard(self, job_id: str, index: int) -> ShardRow:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT * FROM embedding_shards WHERE job_id = %s AND shard = %s",
                               (job_id, index)).fetchone()
        if row is None:
            raise NotFound(f"no shard {index} in embedding job {job_id}", code="shard_not_found")
        return ShardRow(job_id, index, row["images"], row["batch_size"], row["failures"],
                        row["done_at"] is not None)

    def start_shard(self, job_id: str, index: int) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE embedding_shards SET started_at = coalesce(started_at, now())"
                         " WHERE job_id = %s AND shard = %s", (job_id, index))
            conn.execute("UPDATE embedding_jobs SET state = 'running', updated_at = now(),"
                         " started_at = coalesce(started_at, now())"
                         " WHERE id = %s AND state = 'queued'", (job_id,))

    def halve_batch(self, job_id: str, index: int) -> int:
        """After running out of memory: the shard's batch size, halved (at least 1)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "UPDATE embedding_shards SET batch_size = greatest(1, batch_size / 2)"
                " WHERE job_id = %s AND shard = %s RETURNING batch_size",
                (job_id, index)).fetchone()
        return row["batch_size"]

    def complete_shard(self, conn: psycopg.Connection, shard: ShardRow, worker: str,
                       part: dict) -> bool:
        """Mark the shard done (once) and count it; True when it completes the job."""
        marked = conn.execute(
            "UPDATE embedding_shards SET done_at = now(), done_by = %s, part_sha256 = %s,"
            " non_finite_rows = %s, feature_dim = %s, seconds = %s"
            " WHERE job_id = %s AND shard = %s AND done_at IS NULL",
            (worker, part["sha256"], part["non_finite_rows"], part["feature_dim"],
             part["seconds"], shard.job_id, shard.shard)).rowcount
        if not marked:
            return False
        row = conn.execute(
            "UPDATE embedding_jobs SET shards_done = shards_done + 1,"
            " images_done = images_done + %s, updated_at = now() WHERE id = %s"
            " RETURNING shards_done = shards_total AS complete",
            (shard.images, shard.job_id)).fetchone()
        return bool(row["complete"])

    def record_shard_failure(self, job_id: str, index: int, error: str) -> int:
        with self.pool.connection() as conn:
            row = conn.execute(
                "UPDATE embedding_shards SET failures = failures + 1, last_error = %s"
                " WHERE job_id = %s AND shard = %s RETURNING failures",
                (error[:2000], job_id, index)).fetchone()
        return row["failures"] if row else 0

    def record_assemble_failure(self, job_id: str) -> int:
        with self.pool.connection() as conn:
            row = conn.execute(
                "UPDATE embedding_jobs SET assemble_failures = assemble_failures + 1"
                " WHERE id = %s RETURNING assemble_failures", (job_id,)).fetchone()
        return row["assemble_failures"] if row else 0

    # --- the queue's depth -------------------------------------------------------------
    def shards_waiting(self) -> dict[str, int]:
        """Shards of active jobs not done yet (waiting or running), per job."""
        with self.pool.connection(timeout=2) as conn:
            return {r["job_id"]: r["n"] for r in conn.execute(
                "SELECT s.job_id, count(*) AS n FROM embedding_shards s"
                " JOIN embedding_jobs j ON j.id = s.job_id"
                " WHERE s.done_at IS NULL AND j.state IN ('queued', 'running')"
                " GROUP BY s.job_id")}
