"""The scorer worker process: drains the tile queue (``mfr serve scorer-worker``).

Any number of these, on one machine (``mfr up --scorers N``) or as pods (the
scorer-worker Deployment and its HPA), take plan, tile and merge tasks from
the procrastinate queue in PostgreSQL (services/scorer/queue.py). Each runs one
task at a time with ``MFR_SCORER_THREADS`` BLAS threads (default: the cores it
may use), answers gRPC health on ``MFR_GRPC_PORT`` (SERVING once PostgreSQL
and S3 answer), reports ``mfr_scorer_queue_tiles`` on ``MFR_METRICS_PORT``,
and every ``MFR_SCORER_REAP_EVERY_S`` hands back the tasks of workers whose
heartbeat lapsed.

SIGTERM: health goes NOT_SERVING, no new task is taken, the running one has
``MFR_SHUTDOWN_GRACE_S`` to finish; past that it is handed back to the queue
(another worker redoes it) and the process exits.
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits

from mfr.db.pool import open_pool, ping
from mfr.health import Readiness
from mfr.logs import get_logger
from mfr.queue_depth import export_queue_depth
from mfr.rpc.process import Process, serve
from mfr.storage import ObjectStore
from mfr.taskqueue import QueueSpec, QueueWorker, WorkerTiming, worker_app
from services.scorer.config import ScorerWorkerSettings
from services.scorer.engine.backends import select_backend
from services.scorer.inputs import JobInputs
from services.scorer.jobs import JobBook
from services.scorer.queue import MERGE, PLAN, QUEUE, QUEUE_TILES, TILE, Deferrer
from services.scorer.worker.context import WorkerContext
from services.scorer.worker.coordinator import Coordinator
from services.scorer.worker.tilework import TileWork

log = get_logger("services.scorer.worker")

NAME = "scorer-worker"


def build(settings: ScorerWorkerSettings) -> Process:
    threads = settings.blas_threads()
    threadpool_limits(limits=threads)  # numpy is loaded (the engine imports it): applies now
    name = settings.worker_id()
    url = settings.database_url.get_secret_value()
    pool = open_pool(settings, NAME, max_size=4)
    store = ObjectStore.from_settings(settings)
    book, deferrer = JobBook(pool), Deferrer(pool)
    inputs = JobInputs(store, settings.work_root("scorer"), settings.scorer_cached_jobs, threads)
    backend = select_backend(settings.scorer_backend, threads, settings.scorer_precision)
    context = WorkerContext(pool, book, deferrer, store, inputs, backend, settings)
    coordinator = Coordinator(context)
    tiles = TileWork(context, name)
    spec = QueueSpec((QUEUE,), {PLAN: coordinator.plan_job, TILE: tiles.score,
                                MERGE: coordinator.merge_round},
                     coordinator.on_failure, lambda _task, _kwargs: settings.scorer_task_deadline_s)
    timing = WorkerTiming(settings.scorer_heartbeat_s, settings.scorer_stalled_s,
                          settings.scorer_reap_every_s, settings.scorer_poll_s)
    worker = QueueWorker(worker_app(url, spec, settings.scorer_retry_wait_s), spec, name, timing,
                         settings.shutdown_grace_s)
    export_queue_depth(book.tiles_waiting, QUEUE_TILES)
    log.info("worker configured", worker=name, blas_threads=threads, backend=backend.name,
             precision=backend.precision, precision_reason=backend.precision_reason,
             tile_size=settings.scorer_tile_size)
    return Process(ready=Readiness({"postgres": lambda: ping(pool), "s3": store.ready}),
                   background=[worker], on_stop=pool.close)


def main() -> None:
    serve(NAME, ScorerWorkerSettings, build)
