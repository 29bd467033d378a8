"""Wiring of the scorer API: database pool, object store, queue, servicer; ready when both answer.

The API process only records jobs and reads them; the heavy work runs in the
scorer workers (services/scorer/worker/). docs/scoring-service.md has the design.
"""

from __future__ import annotations

from mfr.db.pool import open_pool, ping
from mfr.health import Readiness
from mfr.queue_depth import export_queue_depth
from mfr.rpc.process import Process, serve
from mfr.scorer.v1 import scorer_pb2_grpc
from mfr.storage import ObjectStore
from services.scorer.config import ScorerSettings
from services.scorer.control import JobControl
from services.scorer.jobs import JobBook
from services.scorer.queue import QUEUE_TILES, Deferrer
from services.scorer.servicer import ScorerServicer


def build(settings: ScorerSettings) -> Process:
    pool = open_pool(settings, "scorer")
    store = ObjectStore.from_settings(settings)
    book = JobBook(pool)
    control = JobControl(pool, book, Deferrer(pool), store.buckets.features,
                         settings.scorer_watch_poll_s)
    export_queue_depth(book.tiles_waiting, QUEUE_TILES)
    return Process(
        servicers=[(scorer_pb2_grpc.add_ScorerServiceServicer_to_server, ScorerServicer(control),
                    "mfr.scorer.v1.ScorerService")],
        ready=Readiness({"postgres": lambda: ping(pool), "s3": store.ready}),
        on_stop=pool.close,
    )


def main() -> None:
    serve("scorer", ScorerSettings, build)
