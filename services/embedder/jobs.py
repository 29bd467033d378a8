"""Embedding jobs whose model, test set and features live in object storage (no gRPC here).

A job is (job id, model object, test-set id, normalisation, shards). The
model is fetched into the cache (checked against its sha256), the test set
is the local one when its id matches (``mfr up``) or a cached copy fetched
shard by shard, finished shards go to ``parts/<job>/<testset>/`` in the
features bucket (so pods share a job and a restart resumes), and a call
covering every shard assembles the matrix and uploads it with a sidecar
``<key>.json`` naming the test set (id = its content hash) it belongs to.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mfr.errors import InvalidInput
from mfr.logs import get_logger
from mfr.storage import ObjectRef, ObjectStore, StoredObject
from mfr.testset.store import resolve_testset
from services.embedder.embedding import Progress, assemble, embed_testset
from services.embedder.parts import ObjectParts
from services.embedder.pipeline import Pipeline
from services.embedder.runtime import Runner, load_model_bytes

log = get_logger("mfr.embedder")


@dataclass(frozen=True)
class EmbedJob:
    job_id: str
    model: ObjectRef
    testset_id: str
    input_mean: float
    input_std: float
    shards: tuple[int, ...] = ()  # empty: every shard
    features: ObjectRef | None = None  # where the matrix goes (only when every shard is asked)


@dataclass(frozen=True)
class EmbedOutcome:
    shards_done: int
    shards_total: int
    images: int
    non_finite_rows: int
    feature_dim: int
    features: StoredObject | None


class Cancellation:
    """Lets a caller stop a running job (the client went away, the server stops)."""

    def __init__(self) -> None:
        self._pipeline: Pipeline | None = None
        self.cancelled = False

    def attach(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        if self.cancelled:
            pipeline.cancel()

    def cancel(self) -> None:
        self.cancelled = True
        if self._pipeline is not None:
            self._pipeline.cancel()


class StoredEmbedder:
    """Runs jobs one at a time (a job saturates the GPU or the CPU cores by itself)."""

    def __init__(self, store: ObjectStore, cache_dir: Path, local_testset: Path | None = None,
                 device: str = "auto", threads: int | None = None,
                 batch_size: int | None = None) -> None:
        self.store = store
        self.cache_dir = Path(cache_dir)
        self.local_testset = local_testset
        self.device = device
        self.threads = threads
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._runner: tuple[str, Runner] | None = None  # the last model's session, reused

    def _model(self, ref: ObjectRef) -> tuple[str, Runner]:
        if not ref.bucket or not ref.key:
            raise InvalidInput("the request names no model object", code="model_missing")
        if self._runner and ref.sha256 and self._runner[0] == ref.sha256:
            return self._runner
        models = self.cache_dir / "models"
        models.mkdir(parents=True, exist_ok=True)
        name = ref.sha256 or hashlib.sha256(f"{ref.bucket}/{ref.key}".encode()).hexdigest()
        path = models / f"{name}.onnx"
        stored = self.store.get_file(ref.bucket, ref.key, path, expect_sha256=ref.sha256 or None)
        data = load_model_bytes(path)
        path.unlink(missing_ok=True)  # the session holds what it needs
        runner = Runner(data, device=self.device, threads=self.threads)
        # Parts are keyed by the stored model's hash (what the validator reported).
        self._runner = (stored.sha256, runner)
        return self._runner

    def run(self, job: EmbedJob, progress: Callable[[Progress], None] | None = None,
            cancellation: Cancellation | None = None) -> EmbedOutcome:
        if job.input_std == 0:
            raise InvalidInput("input_std must not be 0", code="normalisation_invalid")
        if not job.job_id or "/" in job.job_id:
            raise InvalidInput("job_id must be non-empty and contain no '/'", code="job_invalid")
        with self._lock:
            return self._run(job, progress, cancellation or Cancellation())

    def _run(self, job: EmbedJob, progress: Callable[[Progress], None] | None,
             cancellation: Cancellation) -> EmbedOutcome:
        model_hash, runner = self._model(job.model)
        testset = resolve_testset(job.testset_id, self.store, self.cache_dir, self.local_testset,
                                  shards=job.shards or None)
        parts = ObjectParts(self.store, job.job_id, testset.id)
        log.info("embedding", job_id=job.job_id, testset_id=testset.id,
                 shards=len(set(job.shards)) or len(testset.shards), device=runner.info.device)
        summary = embed_testset(runner, model_hash, testset, parts, job.input_mean,
                                job.input_std, shards=job.shards or None,
                                batch_size=self.batch_size, progress=progress,
                                pipeline_hook=cancellation.attach)
        chosen = sorted(set(job.shards)) or range(len(testset.shards))
        outcome = EmbedOutcome(len(chosen), len(chosen),
                               sum(testset.shards[i].images for i in chosen),
                               summary.non_finite_rows, summary.feature_dim, None)
        if job.features is None or job.shards:
            return outcome
        stored, dim, bad_rows = self._publish(job, testset, parts, model_hash)
        log.info("features written", job_id=job.job_id, key=job.features.key, rows=testset.images,
                 feature_dim=dim, non_finite_rows=bad_rows,
                 images_per_s=round(summary.images_per_s, 1))
        return EmbedOutcome(len(chosen), len(chosen), testset.images, bad_rows, dim, stored)

    def _publish(self, job: EmbedJob, testset, parts: ObjectParts,
                 model_hash: str) -> tuple[StoredObject, int, int]:
        work = self.cache_dir / "features"
        work.mkdir(parents=True, exist_ok=True)
        local = work / f"{job.job_id}.npy"
        try:
            dim, bad_rows = assemble(testset, parts, local)
            stored = self.store.put_file(job.features.bucket, job.features.key, local)
        finally:
            local.unlink(missing_ok=True)
        sidecar = {"testset_id": testset.id, "model_sha256": model_hash, "rows": testset.images,
                   "feature_dim": dim, "dtype": "float32", "non_finite_rows": bad_rows,
                   "input_mean": job.input_mean, "input_std": job.input_std,
                   "sha256": stored.sha256, "job_id": job.job_id}
        self.store.put_bytes(job.features.bucket, job.features.key + ".json",
                             json.dumps(sidecar).encode())
        parts.clear()  # the matrix replaces them
        return stored, dim, bad_rows
