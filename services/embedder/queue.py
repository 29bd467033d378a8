"""The shard queue: procrastinate tasks on PostgreSQL (docs/embedder.md).

One queue per runtime (``embedder:onnxruntime-cpu``, ``embedder:torch-cuda``,
...): a worker drains the queues of the runtimes it can run, so a CPU pod never
takes a shard of a challenge embedded on GPUs. Two tasks: ``embedder.shard`` (one
shard of a job) and ``embedder.assemble`` (the features, once every shard is
done; it runs before waiting shards).

Fair shares: a shard's priority is minus its fair key (start-time fair queuing,
:meth:`services.embedder.jobs.JobBook.fair_clock`), so the k-th shard of a job
submitted later waits behind the k-th waiting shard of every earlier job, not
behind all of them: with J jobs waiting, each gets 1/J of the workers.

Deferral is synchronous and takes the caller's connection, so a job's rows and
its tasks appear in one transaction or not at all; the workers' side is
:mod:`mfr.taskqueue`.
"""

from __future__ import annotations

import psycopg

from mfr.taskqueue import TaskDeferrer

SHARD = "embedder.shard"
ASSEMBLE = "embedder.assemble"
ASSEMBLE_PRIORITY = 1  # above every shard (shards have priority <= 0)


def queue_name(runtime: str) -> str:
    return f"embedder:{runtime}"


class Deferrer(TaskDeferrer):
    """Puts shard and assemble tasks on the queue, inside the caller's transaction."""

    def shards(self, conn: psycopg.Connection, job_id: str, runtime: str,
               shards: list[tuple[int, int]]) -> list[int]:
        """One task per (shard index, fair key); returns the task ids in the same order."""
        return [self.task(SHARD, conn, queue=queue_name(runtime), priority=-fair_key)
                .defer(job_id=job_id, shard=index) for index, fair_key in shards]

    def assemble(self, conn: psycopg.Connection, job_id: str, runtime: str) -> int:
        return self.task(ASSEMBLE, conn, queue=queue_name(runtime),
                         priority=ASSEMBLE_PRIORITY).defer(job_id=job_id)


#: The autoscaling signal (mfr.queue_depth), reported by the embedder API and every worker.
QUEUE_SHARDS = ("mfr_embedder_queue_shards",
                "Shards of active embedding jobs not done yet (waiting or being embedded)")
PER_JOB = ("mfr_embedder_queue_shards_per_job", "Shards not done yet, per embedding job")
