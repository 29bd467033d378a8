"""Wiring of the embedder: settings, object store, the stored-job core, servicer.

Ready (health SERVING) once the object store answers and, when ``MFR_TESTSET``
names a local test set (``mfr up``), that test set is in object storage too
(uploaded in the background at start-up; the scorer and other pods find it
there by id).
"""

from __future__ import annotations

import threading

from mfr.embedder.v1 import embedder_pb2_grpc
from mfr.logs import get_logger
from mfr.rpc.service import ServiceParts, serve
from mfr.settings import ServiceSettings
from mfr.storage import ObjectStore
from mfr.testset.format import TestSet
from mfr.testset.store import upload_testset
from services.embedder.config import EmbedderSettings
from services.embedder.servicer import EmbedderServicer
from services.embedder.jobs import StoredEmbedder

log = get_logger("services.embedder")
SERVICE_NAME = "mfr.embedder.v1.EmbedderService"


class Publication:
    """Uploads the local test set once, off the start-up path; retried when it fails."""

    def __init__(self, store: ObjectStore, testset: TestSet | None) -> None:
        self.store = store
        self.testset = testset
        self.done = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        if testset is None:
            self.done.set()

    def _run(self) -> None:
        try:
            self.store.ensure_buckets()
            uploaded = upload_testset(self.store, self.testset)
        except Exception as exc:  # noqa: BLE001 - reported, retried by ready()
            log.warning("test set upload failed", reason=str(exc))
            return
        log.info("test set published", testset_id=self.testset.id, uploaded=uploaded)
        self.done.set()

    def ready(self) -> bool:
        with self._lock:
            if not self.done.is_set() and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name="testset-upload",
                                                daemon=True)
                self._thread.start()
        return self.done.is_set()


def build(settings: ServiceSettings) -> ServiceParts:
    config = EmbedderSettings()
    store = ObjectStore.from_settings()
    local = TestSet(config.testset) if config.testset else None
    embedder = StoredEmbedder(store, config.cache_dir, local_testset=config.testset,
                              device=config.embedder_device,
                              threads=config.embedder_threads or None,
                              batch_size=config.embedder_batch_size or None)
    publication = Publication(store, local)
    publication.ready()  # start uploading now
    return ServiceParts(
        servicers=[(embedder_pb2_grpc.add_EmbedderServiceServicer_to_server,
                    EmbedderServicer(embedder), SERVICE_NAME)],
        ready=lambda: store.ready() and publication.ready(),
    )


def main() -> None:
    serve("embedder", build)
