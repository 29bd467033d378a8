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

import asyncio
import contextlib
import logging
import os
import signal
import socket

from threadpoolctl import threadpool_limits

from mfr.db.pool import make_pool, ping
from mfr.logs import configure_logging, get_logger
from mfr.rpc.server import GrpcServer
from mfr.rpc.service import service_settings
from mfr.settings import DatabaseSettings, ServiceSettings
from mfr.storage import ObjectStore
from services.scorer.engine.backends import select_backend
from services.scorer.config import ScorerSettings
from services.scorer.worker.coordinator import Coordinator
from services.scorer.inputs import JobInputs
from services.scorer.jobs import JobBook
from services.scorer.queue import (
    MERGE,
    PLAN,
    QUEUE,
    TILE,
    Deferrer,
    FailureHook,
    export_queue_depth,
    reap_stalled,
    worker_app,
)
from services.scorer.worker.tilework import TileWork

log = get_logger("services.scorer.worker.server")

NAME = "scorer-worker"


def main() -> None:
    settings = service_settings(NAME)
    scorer = ScorerSettings()
    configure_logging(settings.log_format, settings.log_level, service=NAME)
    if settings.log_level.upper() != "DEBUG":
        logging.getLogger("procrastinate").setLevel(logging.WARNING)  # two lines per tile
    threads = scorer.blas_threads()
    threadpool_limits(limits=threads)  # numpy is loaded (the engine imports it): applies now
    raise SystemExit(asyncio.run(run(settings, scorer, threads)))


async def run(settings: ServiceSettings, scorer: ScorerSettings, threads: int) -> int:
    name = scorer.worker_name or f"{socket.gethostname()}-{os.getpid()}"
    url = DatabaseSettings().database_url.get_secret_value()
    pool = make_pool(url, min_size=1, max_size=4, name=NAME)
    pool.open(wait=False)
    store = ObjectStore.from_settings()
    book, deferrer = JobBook(pool), Deferrer(pool)
    inputs = JobInputs(store, scorer.cache_root(), scorer.cached_jobs)
    backend = select_backend()
    coordinator = Coordinator(pool, book, deferrer, store, inputs, backend, scorer)
    tiles = TileWork(pool, book, deferrer, store, inputs, backend, scorer, name)
    app = worker_app(url, {PLAN: coordinator.plan_job, TILE: tiles.score,
                           MERGE: coordinator.merge_round},
                     coordinator.on_failure, scorer.retry_wait_s)
    server = GrpcServer(NAME, settings.host, settings.grpc_port, settings.metrics_port,
                        max_workers=2)
    export_queue_depth(book.tiles_waiting)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server.start()
    try:
        if not await _ready(pool, store, stop):
            return 0
        async with app.open_async():
            server.set_serving()
            log.info("worker started", worker=name, blas_threads=threads, backend=backend.name,
                     tile_size=scorer.tile_size)
            worker = asyncio.create_task(app.run_worker_async(
                queues=[QUEUE], name=name, concurrency=1, install_signal_handlers=False,
                shutdown_graceful_timeout=settings.shutdown_grace_s,
                update_heartbeat_interval=scorer.heartbeat_s,
                stalled_worker_timeout=scorer.stalled_s,
                fetch_job_polling_interval=scorer.poll_s, delete_jobs="successful"))
            reaper = asyncio.create_task(_reap_forever(app, scorer, coordinator.on_failure))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({worker, stopping}, return_when=asyncio.FIRST_COMPLETED)
            server.health.enter_graceful_shutdown()
            reaper.cancel()
            stopped_on_its_own = worker.done()
            worker.cancel()  # procrastinate: stop fetching, let the running task finish or hand back
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            stopping.cancel()
        if stopped_on_its_own:
            log.error("worker loop ended on its own (database lost?)", worker=name)
            return 1
        return 0
    finally:
        server.stop(grace=1.0)
        pool.close()
        log.info("shutdown complete", worker=name)


async def _ready(pool, store: ObjectStore, stop: asyncio.Event) -> bool:
    """Wait until PostgreSQL and S3 answer (True), or until asked to stop (False)."""
    while not stop.is_set():
        try:
            if await asyncio.to_thread(lambda: ping(pool) and store.ready()):
                return True
        except Exception as exc:  # noqa: BLE001 - not ready yet: say why, try again
            log.warning("not ready", reason=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
    return False


async def _reap_forever(app, scorer: ScorerSettings, on_failure: FailureHook) -> None:
    while True:
        await asyncio.sleep(scorer.reap_every_s)
        try:
            await reap_stalled(app, scorer.stalled_s, on_failure)
        except Exception as exc:  # noqa: BLE001 - the next round may succeed
            log.warning("reaping stalled tasks failed", error=str(exc))
