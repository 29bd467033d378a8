"""Wiring of the scorer API: database pool, object store, queue, servicer; ready when both answer.

The API process only records jobs and reads them; the heavy work runs in the
scorer workers (services/scorer/worker/server.py). docs/scoring-service.md has the design.
"""

from __future__ import annotations

import logging

from mfr.db.pool import ping, pool_from_settings
from mfr.rpc.service import ServiceParts, serve
from mfr.scorer.v1 import scorer_pb2_grpc
from mfr.settings import ServiceSettings
from mfr.storage import ObjectStore
from services.scorer.config import ScorerSettings
from services.scorer.jobs import JobBook
from services.scorer.queue import Deferrer, export_queue_depth
from services.scorer.control import ScoringService
from services.scorer.servicer import ScorerServicer


def build(settings: ServiceSettings) -> ServiceParts:
    if settings.log_level.upper() != "DEBUG":
        logging.getLogger("procrastinate").setLevel(logging.WARNING)  # a line per deferral
    scorer = ScorerSettings()
    pool = pool_from_settings(name="scorer")
    pool.open(wait=False)
    store = ObjectStore.from_settings()
    book = JobBook(pool)
    service = ScoringService(pool, book, Deferrer(pool), store.buckets.features,
                             scorer.watch_poll_s)
    export_queue_depth(book.tiles_waiting)
    return ServiceParts(
        servicers=[(scorer_pb2_grpc.add_ScorerServiceServicer_to_server, ScorerServicer(service),
                    "mfr.scorer.v1.ScorerService")],
        ready=lambda: ping(pool) and store.ready(),
        on_stop=pool.close,
    )


def main() -> None:
    serve("scorer", build)
