"""Wiring of the embedder: settings, object store, the stored-job core, servicer.

Ready (health SERVING) once the object store answers and, when ``MFR_TESTSET``
names a local test set (``mfr up``), that test set is in object storage too
(uploaded in the background at start-up; the scorer and other pods find it
there by id).
"""

from __future__ import annotations

from mfr.embedder.v1 import embedder_pb2_grpc
from mfr.rpc.process import Process, Warmup, serve
from mfr.storage import ObjectStore
from mfr.testset.format import TestSet
from mfr.testset.store import upload_testset
from services.embedder.config import EmbedderSettings
from services.embedder.jobs import StoredEmbedder
from services.embedder.servicer import EmbedderServicer

SERVICE_NAME = "mfr.embedder.v1.EmbedderService"


def publish(store: ObjectStore, testset: TestSet | None) -> dict:
    if testset is None:
        return {}
    store.ensure_buckets()
    return {"testset_id": testset.id, "uploaded": upload_testset(store, testset)}


def build(settings: EmbedderSettings) -> Process:
    store = ObjectStore.from_settings(settings)
    local = TestSet(settings.testset) if settings.testset else None
    embedder = StoredEmbedder(store, settings.cache_dir, local_testset=settings.testset,
                              device=settings.embedder_device,
                              threads=settings.embedder_threads or None,
                              batch_size=settings.embedder_batch_size or None)
    publication = Warmup("testset-upload", lambda: publish(store, local))
    publication.ready()  # start uploading now
    return Process(
        servicers=[(embedder_pb2_grpc.add_EmbedderServiceServicer_to_server,
                    EmbedderServicer(embedder), SERVICE_NAME)],
        ready=lambda: store.ready() and publication.ready(),
    )


def main() -> None:
    serve("embedder", EmbedderSettings, build)
