"""The embedder worker's two tasks: one shard (``embedder.shard``) and the assembly
(``embedder.assemble``), and what a failure does to the job.

A shard's features go to their deterministic key in the features bucket first;
the shard is done only when the UPDATE that marks it done commits, and the
worker whose UPDATE completes the job enqueues the assembly in that same
transaction. A worker killed anywhere in between leaves the shard not done: its
task is handed back when the worker's heartbeat lapses, and the next worker
writes the same key again, with the same bits (same model, runtime, batch size
and padding).

Failures: the model's own (it crashes, hangs past the shard's deadline, gives
misshapen features, cannot be loaded) fail the job at once, since another worker
would see the same; a test-set shard that is missing or corrupt fails it at once
too (``testset_corrupt``, naming the shard); out of memory retries the shard at
half the batch size, down to 1; anything else is retried, and a shard failing
``MFR_EMBEDDER_ATTEMPTS`` times fails the job with ``shard_failed``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from threading import Event

import numpy as np
from psycopg_pool import ConnectionPool

from mfr.jobs import ACTIVE, InjectedFault, end_job
from mfr.logs import get_logger
from mfr.storage import ObjectStore
from mfr.taskqueue import GiveUp
from mfr.testset.format import TestSetCorrupt
from mfr.testset.store import fetch_testset, stored_testset
from services.embedder.embedding import assemble
from services.embedder.jobs import JobBook
from services.embedder.parts import ObjectParts
from services.embedder.queue import ASSEMBLE, SHARD, Deferrer
from services.embedder.worker.models import ModelCache
from services.embedder.worker.sandbox import ModelFault, OutOfMemory, Stopped

log = get_logger("services.embedder.worker")
CHECK_JOB_EVERY_S = 1.0


@dataclass(frozen=True)
class StepContext:
    pool: ConnectionPool
    book: JobBook
    deferrer: Deferrer
    store: ObjectStore
    models: ModelCache
    cache_dir: Path
    worker: str
    attempts: int
    fault_delay_s: float = 0.0  # tests: a shard held this long before it is embedded,
    fault_fail_shard: str = ""  # and a shard ("*": all) whose step raises


class Steps:
    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx

    # --- embedder.shard ----------------------------------------------------------------
    def shard(self, abandoned: Event, job_id: str, shard: int) -> str:
        """Embed one shard and record it; returns what happened (for logs and tests)."""
        ctx = self.ctx
        job = ctx.book.job(job_id)
        row = ctx.book.shard(job_id, shard)
        if job["state"] not in ACTIVE or row.done:
            return "skipped"
        ctx.book.start_shard(job_id, shard)
        if ctx.fault_delay_s and abandoned.wait(ctx.fault_delay_s):
            return "abandoned"
        if ctx.fault_fail_shard in ("*", str(shard)):
            raise InjectedFault(f"injected failure in shard {shard}")
        testset = None
        try:
            testset = fetch_testset(ctx.store, job["testset_id"], ctx.cache_dir, [shard],
                                    manifest=False)
            summary, out = self._embed(abandoned, job, row, testset)
        except (ModelFault, TestSetCorrupt) as exc:
            self.fail(job_id, exc.code, exc.message)
            raise GiveUp(exc.message) from exc
        except Stopped:
            return "stopped"
        finally:
            if testset is not None:  # one shard on disk at a time: a worker's disk stays small
                testset.shard_path(shard).unlink(missing_ok=True)
        try:  # checked before it is uploaded: a misshapen part never reaches the bucket
            shape = np.load(out, mmap_mode="r", allow_pickle=False).shape
            if shape != (row.images, summary["feature_dim"]):
                self.fail(job_id, "feature_shape", f"shard {shard}: features of shape "
                          f"{shape}, expected ({row.images}, D)")
                raise GiveUp("misshapen features")
            stored = ObjectParts(ctx.store, job_id, job["testset_id"]).put_file(shard, out)
        finally:
            out.unlink(missing_ok=True)
        part = {"sha256": stored.sha256, **{k: summary[k] for k in
                                            ("non_finite_rows", "feature_dim", "seconds")}}
        with ctx.pool.connection() as conn, conn.transaction():
            complete = ctx.book.complete_shard(conn, row, ctx.worker, part)
            if complete:
                ctx.book.set_assemble_task(conn, job_id,
                                           ctx.deferrer.assemble(conn, job_id, job["runtime"]))
        log.info("shard embedded", job_id=job_id, shard=shard, images=row.images,
                 seconds=summary["seconds"], batch_size=summary["batch_size"],
                 job_complete=complete)
        return "completed job" if complete else "done"

    def _embed(self, abandoned: Event, job: dict, row, testset) -> tuple[dict, Path]:
        """Run the shard in the model's process; halve the batch after running out of
        memory. Returns (the child's summary, the features file)."""
        ctx = self.ctx
        batch = row.batch_size
        stop = _StopCheck(ctx.book, job["id"], abandoned)
        while True:
            model = ctx.models.get(job, job["runtime"])
            used = ctx.book.use_runtime(job["id"], model.runtime)
            if used.get("name") != model.runtime["name"]:
                raise ModelFault(f"this job runs on {used.get('name')}, this worker's model "
                                 f"on {model.runtime['name']}", code="runtime_mismatch")
            out = Path(model.spec.workdir) / f"{job['id']}-{row.shard}.npy"
            request = {"testset_root": str(testset.root), "shard": row.shard,
                       "mean": job["input_mean"], "std": job["input_std"], "batch": batch,
                       "out": str(out)}
            try:
                summary = model.embed(request, job["shard_deadline_s"], stop)
                return {**summary, "batch_size": batch}, out
            except OutOfMemory as exc:
                ctx.models.forget(job, job["runtime"])
                if batch == 1:
                    raise ModelFault(f"{exc.message} (batch size 1)",
                                     code="resource_limit") from None
                batch = ctx.book.halve_batch(job["id"], row.shard)
                log.warning("out of memory: halving the batch", job_id=job["id"],
                            shard=row.shard, batch_size=batch)

    # --- embedder.assemble -------------------------------------------------------------
    def assemble(self, abandoned: Event, job_id: str) -> str:
        """Write the features matrix (and its sidecar JSON), then finish the job."""
        ctx = self.ctx
        job = ctx.book.job(job_id)
        if job["state"] != "running":
            return "skipped"
        testset = stored_testset(ctx.store, job["testset_id"], ctx.cache_dir)
        parts = ObjectParts(ctx.store, job_id, testset.id)
        work = ctx.cache_dir / "features"
        work.mkdir(parents=True, exist_ok=True)
        local = work / f"{job_id}.npy"
        try:
            dim, bad_rows = assemble(testset, parts, local)
            if abandoned.is_set():
                return "abandoned"
            stored = ctx.store.put_file(job["features_bucket"], job["features_key"], local)
        finally:
            local.unlink(missing_ok=True)
        sidecar = {"testset_id": testset.id, "model_sha256": job["model_sha256"],
                   "rows": testset.images, "feature_dim": dim, "dtype": "float32",
                   "non_finite_rows": bad_rows, "input_mean": job["input_mean"],
                   "input_std": job["input_std"], "sha256": stored.sha256, "job_id": job_id,
                   "runtime": job["runtime_used"], "batch_size": job["batch_size"]}
        ctx.store.put_bytes(job["features_bucket"], job["features_key"] + ".json",
                            json.dumps(sidecar).encode())
        if ctx.book.finish(job_id, {"sha256": stored.sha256, "size": stored.size}, dim,
                           bad_rows):
            parts.clear()  # the matrix replaces them
        log.info("features written", job_id=job_id, rows=testset.images, feature_dim=dim,
                 non_finite_rows=bad_rows)
        return "done"

    # --- failures ----------------------------------------------------------------------
    def fail(self, job_id: str, code: str, message: str) -> None:
        """End the job as failed (if still active) and drop its waiting tasks."""
        end_job(self.ctx.pool, self.ctx.book, self.ctx.deferrer, job_id, "failed", code, message)

    def on_failure(self, task_name: str, kwargs: dict, reason: str) -> bool:
        """A task raised (or its worker was lost): count it; True when the job failed."""
        job_id = kwargs.get("job_id", "")
        if task_name == SHARD:
            failures = self.ctx.book.record_shard_failure(job_id, kwargs["shard"], reason)
            if failures < self.ctx.attempts:
                return False
            self.fail(job_id, "shard_failed",
                      f"shard {kwargs['shard']} failed {failures} times; last: {reason}")
            return True
        gave_up = (task_name == ASSEMBLE
                   and self.ctx.book.record_assemble_failure(job_id) >= self.ctx.attempts)
        if gave_up:
            self.fail(job_id, "assemble_failed", f"the features could not be written: {reason}")
        return gave_up


class _StopCheck:
    """True once the job is no longer active or the task was abandoned; the database is
    asked at most every second."""

    def __init__(self, book: JobBook, job_id: str, abandoned: Event) -> None:
        self.book = book
        self.job_id = job_id
        self.abandoned = abandoned
        self.next_check = 0.0

    def __call__(self) -> bool:
        if self.abandoned.is_set():
            return True
        if time.monotonic() < self.next_check:
            return False
        self.next_check = time.monotonic() + CHECK_JOB_EVERY_S
        return self.book.job(self.job_id)["state"] not in ACTIVE
