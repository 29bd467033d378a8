"""Wiring of the embedder API: database pool, object store, queue, servicer.

Ready (health SERVING) once PostgreSQL and the object store answer and, when
``MFR_TESTSET`` names a local test set (``mfr up``), that test set is in object
storage too (uploaded in the background at start-up; workers find it there by
id). The heavy work runs in the embedder workers (services/embedder/worker/).
"""

from __future__ import annotations

from mfr.db.pool import open_pool, ping
from mfr.embedder.v1 import embedder_pb2_grpc
from mfr.health import Readiness
from mfr.queue_depth import export_queue_depth
from mfr.rpc.process import Process, Warmup, serve
from mfr.storage import ObjectStore
from mfr.testset.format import TestSet
from mfr.testset.store import upload_testset
from services.embedder.config import EmbedderSettings
from services.embedder.control import Deadline, EmbedControl
from services.embedder.jobs import JobBook
from services.embedder.queue import PER_JOB, QUEUE_SHARDS, Deferrer
from services.embedder.servicer import EmbedderServicer

SERVICE_NAME = "mfr.embedder.v1.EmbedderService"


def publish(store: ObjectStore, testset: TestSet | None) -> dict:
    if testset is None:
        return {}
    store.ensure_buckets()
    return {"testset_id": testset.id, "uploaded": upload_testset(store, testset)}


def build(settings: EmbedderSettings) -> Process:
    pool = open_pool(settings, "embedder")
    store = ObjectStore.from_settings(settings)
    book = JobBook(pool)
    control = EmbedControl(pool, book, Deferrer(pool), store, settings.cache_dir,
                           Deadline(settings.embedder_deadline_factor,
                                    settings.embedder_deadline_floor_s),
                           settings.embedder_watch_poll_s)
    export_queue_depth(book.shards_waiting, QUEUE_SHARDS, PER_JOB)
    local = TestSet(settings.testset) if settings.testset else None
    publication = Warmup("testset-upload", lambda: publish(store, local))
    publication.ready()  # start uploading now
    return Process(
        servicers=[(embedder_pb2_grpc.add_EmbedderServiceServicer_to_server,
                    EmbedderServicer(control), SERVICE_NAME)],
        ready=Readiness({"postgres": lambda: ping(pool), "s3": store.ready,
                         publication.name: publication.ready}),
        on_stop=pool.close,
    )


def main() -> None:
    serve("embedder", EmbedderSettings, build)
