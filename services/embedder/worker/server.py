"""The embedder worker process: drains the shard queues (``mfr serve embedder-worker``).

Any number of these, on one machine (``mfr up --embedders N``) or as pods (the
embedder-worker Deployment and its HPA), take shard and assembly tasks from the
queues of the runtimes they can run (``MFR_EMBEDDER_RUNTIMES``, default: all this
machine can). Each runs one task at a time; the model runs in a confined child
process (services/embedder/worker/sandbox.py), loaded once per model. Health on
``MFR_GRPC_PORT`` (SERVING once PostgreSQL and S3 answer); the queue's depth
(``mfr_embedder_queue_shards``) on ``MFR_METRICS_PORT``.

SIGTERM: health goes NOT_SERVING, no new task is taken, the running one has
``MFR_SHUTDOWN_GRACE_S`` to finish; past that it is handed back (another worker
redoes it) and the process exits.
"""

from __future__ import annotations

from mfr.db.pool import open_pool, ping
from mfr.errors import GpuUnavailable
from mfr.health import Readiness
from mfr.logs import get_logger
from mfr.queue_depth import export_queue_depth
from mfr.rpc.process import Process, Warmup, serve
from mfr.sandbox.inspect import ConfinementCheck
from mfr.storage import ObjectStore
from mfr.taskqueue import QueueSpec, QueueWorker, WorkerTiming, worker_app
from services.embedder.config import MIB, EmbedderWorkerSettings
from services.embedder.jobs import JobBook
from services.embedder.queue import ASSEMBLE, PER_JOB, QUEUE_SHARDS, SHARD, Deferrer, queue_name
from services.embedder.runtime import gpu_problem, runtimes_here
from services.embedder.worker.models import ModelCache
from services.embedder.worker.sandbox import PRELOAD
from services.embedder.worker.steps import StepContext, Steps

log = get_logger("services.embedder.worker")
NAME = "embedder-worker"
# Past the shard's own deadline (the model's process is killed then), what a worker may
# spend on fetching and uploading before the task is abandoned and retried elsewhere.
STEP_MARGIN_S = 600.0


def build(settings: EmbedderWorkerSettings) -> Process:
    name = settings.worker_id()
    runtimes = (runtimes_here() if settings.embedder_runtimes == "auto"
                else tuple(r.strip() for r in settings.embedder_runtimes.split(",") if r.strip()))
    url = settings.database_url.get_secret_value()
    pool = open_pool(settings, NAME, max_size=4)
    store = ObjectStore.from_settings(settings)
    book = JobBook(pool)
    # Started as its models are, before any is: no model runs until it reports itself
    # confined (or the organiser opted out); until then the worker is not ready.
    check = ConfinementCheck(
        PRELOAD, settings.threads(), any(not r.endswith("-cpu") for r in runtimes),
        allow_unconfined=settings.allow_unconfined_models)
    confinement = Warmup("model-confinement", check)
    confinement.ready()
    models = ModelCache(store, settings.work_root("embedder") / "models",
                        settings.embedder_cached_models,
                        settings.threads(), settings.embedder_memory_mb * MIB,
                        settings.embedder_file_mb * MIB,
                        inputs=settings.work_root("embedder") / name / "testsets",
                        confined=not settings.allow_unconfined_models,
                        gate=confinement.ready)
    # The worker's own cache (shards are deleted once embedded: workers sharing a cache
    # directory, as under `mfr up`, must not delete each other's).
    steps = Steps(StepContext(pool, book, Deferrer(pool), store, models,
                              settings.work_root("embedder") / name,
                              name, settings.embedder_attempts,
                              settings.embedder_fault_shard_delay_s,
                              settings.embedder_fault_fail_shard))

    def deadline(task: str, kwargs: dict) -> float | None:
        if task != SHARD:
            return None
        return book.job(kwargs["job_id"])["shard_deadline_s"] + STEP_MARGIN_S

    spec = QueueSpec(tuple(queue_name(r) for r in runtimes),
                     {SHARD: steps.shard, ASSEMBLE: steps.assemble}, steps.on_failure, deadline)
    timing = WorkerTiming(settings.embedder_heartbeat_s, settings.embedder_stalled_s,
                          settings.embedder_reap_every_s, settings.embedder_poll_s)
    worker = QueueWorker(worker_app(url, spec, settings.embedder_retry_wait_s), spec, name,
                         timing, settings.shutdown_grace_s)
    export_queue_depth(book.shards_waiting, QUEUE_SHARDS, PER_JOB)
    log.info("worker configured", worker=name, runtimes=list(runtimes),
             threads=settings.threads())

    def close() -> None:
        models.close()
        pool.close()

    return Process(ready=Readiness({"postgres": lambda: ping(pool), "s3": store.ready,
                                    confinement.name: confinement.ready,
                                    "gpu": lambda: _gpu_ready(runtimes)}),
                   conditions={confinement.name: check.confined},
                   background=[worker], on_stop=close)


def _gpu_ready(runtimes: tuple[str, ...]) -> bool:
    """Ready for the CUDA runtimes it drains; the reason in health when not."""
    problem = gpu_problem(runtimes)
    if problem:
        raise GpuUnavailable(problem)
    return True


def main() -> None:
    serve(NAME, EmbedderWorkerSettings, build)
