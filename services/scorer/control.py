"""The scorer API's domain: submit, read, watch and cancel scoring jobs (no gRPC here).

Submitting records the job and enqueues its plan task in one transaction and
returns at once; everything heavy (downloads, planning, tiles, merges) runs
on the workers. Watching polls PostgreSQL: the tables are the truth, and a
watcher reconnecting to another scorer replica sees the same job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from mfr.errors import InvalidInput
from mfr.jobs import ENDED, check_job_id, end_job, watch
from mfr.logs import get_logger
from services.scorer.inputs import job_challenge
from services.scorer.jobs import JobBook, JobRequest, JobView
from services.scorer.queue import Deferrer

log = get_logger("services.scorer.control")



@dataclass
class JobControl:
    """Submit, read, watch and cancel scoring jobs: what ScorerService offers, without gRPC."""

    pool: ConnectionPool
    book: JobBook
    deferrer: Deferrer
    features_bucket: str
    watch_poll_s: float = 0.5

    def submit(self, request: JobRequest) -> JobView:
        """Create the job (idempotent per job id) and enqueue its planning."""
        check_job_id(request.job_id)
        if not request.features_key:
            raise InvalidInput("features.key is required", code="features_invalid")
        if not request.testset_id:
            raise InvalidInput("testset_id is required", code="testset_invalid")
        if not request.features_bucket:
            request = JobRequest(**{**request.__dict__, "features_bucket": self.features_bucket})
        job_challenge({"id": request.job_id, "challenge_toml": request.challenge_toml})
        with self.pool.connection() as conn, conn.transaction():
            if self.book.create(conn, request):
                self.book.set_plan_task(conn, request.job_id,
                                        self.deferrer.plan(conn, request.job_id))
                log.info("job submitted", job_id=request.job_id, testset_id=request.testset_id)
        return self.book.view(request.job_id)

    def get(self, job_id: str) -> JobView:
        return self.book.view(job_id)

    def cancel(self, job_id: str) -> JobView:
        """Cancel an active job: waiting tasks are dropped, running ones notice and stop.
        Cancelling an ended job changes nothing."""
        end_job(self.pool, self.book, self.deferrer, job_id, "cancelled")
        return self.book.view(job_id)

    def watch(self, job_id: str, still_wanted: Callable[[], bool]) -> Iterator[JobView]:
        """The job now, then on every change (and every few seconds), until it ends."""
        return watch(lambda: self.book.view(job_id),
                     lambda v: (v.state, v.stage, v.tiles_done, v.tiles_total),
                     lambda v: v.state in ENDED, still_wanted, self.watch_poll_s)
