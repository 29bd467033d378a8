"""The embedder API's domain: submit, read, watch and cancel embedding jobs (no gRPC here).

Submitting records the job and one queue task per test-set shard in one
transaction and returns at once; the embedder workers do the rest
(services/embedder/worker/). A shard's deadline is derived from the model's
validated latency: ``max(floor, factor x latency x images in the shard)``, so a
model that hangs on real images (it ran fine on the validator's) is stopped and
the submission fails with ``embed_timeout`` instead of holding a worker.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from psycopg_pool import ConnectionPool

from mfr.challenge import challenge_from_text
from mfr.errors import InvalidInput
from mfr.jobs import ACTIVE, check_job_id, end_job, watch
from mfr.logs import get_logger
from mfr.storage import ObjectRef, ObjectStore
from mfr.testset.store import stored_testset
from services.embedder.jobs import EmbedRequest, JobBook, JobView
from services.embedder.queue import Deferrer

log = get_logger("services.embedder.control")


@dataclass(frozen=True)
class Deadline:
    """How long a shard may take: ``max(floor_s, factor * latency * images)``."""

    factor: float
    floor_s: float

    def for_shard(self, latency_ms: float, images: int) -> float:
        return max(self.floor_s, self.factor * max(latency_ms, 0.0) / 1000.0 * images)


@dataclass
class EmbedControl:
    """Submit, read, watch and cancel embedding jobs: what EmbedderService offers."""

    pool: ConnectionPool
    book: JobBook
    deferrer: Deferrer
    store: ObjectStore
    cache_dir: Path
    deadline: Deadline
    watch_poll_s: float = 0.5

    def submit(self, job_id: str, model: dict, testset_id: str, input_mean: float,
               input_std: float, features: dict, challenge_toml: str = "",
               latency_ms: float = 0.0, owner: str = "") -> JobView:
        """Create the job (idempotent per job id) and queue its shards."""
        check_job_id(job_id)
        if not (model.get("bucket") and model.get("key") and model.get("sha256")):
            raise InvalidInput("model: bucket, key and sha256 are required", code="model_missing")
        if not (features.get("bucket") and features.get("key")):
            raise InvalidInput("features: bucket and key are required", code="features_invalid")
        if not all(map(math.isfinite, (input_mean, input_std))) or input_std == 0:
            raise InvalidInput(f"input normalisation ({input_mean}, {input_std}) is not usable",
                               code="normalisation_invalid")
        embedding = challenge_from_text(challenge_toml, "challenge_toml").embedding
        testset = stored_testset(self.store, testset_id, self.cache_dir)
        shards = [(s.index, s.images) for s in testset.shards]
        request = EmbedRequest(
            job_id, ObjectRef(model["bucket"], model["key"], model["sha256"]), testset_id,
            (float(input_mean), float(input_std)), ObjectRef(features["bucket"], features["key"]),
            embedding.runtime, embedding.batch_size,
            self.deadline.for_shard(latency_ms, max(n for _, n in shards)), owner)
        with self.pool.connection() as conn, conn.transaction():
            created = self.book.create(conn, request, shards)
            if created is not None:
                tasks = self.deferrer.shards(conn, job_id, embedding.runtime, created)
                self.book.set_shard_tasks(conn, job_id, tasks)
                log.info("job submitted", job_id=job_id, testset_id=testset_id,
                         shards=len(shards), runtime=embedding.runtime,
                         batch_size=embedding.batch_size,
                         shard_deadline_s=round(request.shard_deadline_s, 1))
        return self.book.view(job_id)

    def get(self, job_id: str) -> JobView:
        return self.book.view(job_id)

    def cancel(self, job_id: str) -> JobView:
        """Cancel an active job: waiting shards are dropped, running ones stop within
        seconds (their worker kills the model's process). An ended job stays as it is."""
        end_job(self.pool, self.book, self.deferrer, job_id, "cancelled")
        return self.book.view(job_id)

    def watch(self, job_id: str, still_wanted: Callable[[], bool]) -> Iterator[JobView]:
        """The job now, then on every change (and every few seconds), until it ends."""
        return watch(lambda: self.book.view(job_id),
                     lambda v: (v.state, v.row["shards_done"], v.row["images_done"]),
                     lambda v: v.state not in ACTIVE, still_wanted, self.watch_poll_s)
