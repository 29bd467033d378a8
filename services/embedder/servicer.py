"""EmbedderService: protobuf <-> the stored-job core (services/embedder/jobs.py) only."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

from google.protobuf.timestamp_pb2 import Timestamp

from mfr.common.v1 import types_pb2
from mfr.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from mfr.storage import ObjectRef
from services.embedder.embedding import Progress
from services.embedder.jobs import Cancellation, EmbedJob, EmbedOutcome, StoredEmbedder

PROGRESS_EVERY_S = 0.5  # at most two progress messages a second (plus the last)


def job_from_proto(request: embedder_pb2.EmbedRequest) -> EmbedJob:
    features = None
    if request.HasField("features") and request.features.key:
        features = ObjectRef(request.features.bucket, request.features.key)
    return EmbedJob(
        job_id=request.job_id,
        model=ObjectRef(request.model.bucket, request.model.key, request.model.sha256),
        testset_id=request.testset_id,
        input_mean=request.input_mean,
        input_std=request.input_std,
        shards=tuple(request.shards),
        features=features,
    )


def progress_to_proto(state: Progress) -> embedder_pb2.EmbedProgress:
    at = Timestamp()
    at.GetCurrentTime()
    return embedder_pb2.EmbedProgress(
        progress=types_pb2.Progress(done=state.images_done, total=state.images_total,
                                    unit="images", rate=state.rate, eta_seconds=state.eta_seconds,
                                    stage=state.stage, at=at),
        shards_done=state.shards_done,
        shards_total=state.shards_total,
        non_finite_rows=state.non_finite_rows,
    )


def outcome_to_proto(outcome: EmbedOutcome) -> embedder_pb2.EmbedProgress:
    at = Timestamp()
    at.GetCurrentTime()
    message = embedder_pb2.EmbedProgress(
        progress=types_pb2.Progress(done=outcome.images, total=outcome.images, unit="images",
                                    eta_seconds=0.0, stage="done", at=at),
        shards_done=outcome.shards_done,
        shards_total=outcome.shards_total,
        non_finite_rows=outcome.non_finite_rows,
        feature_dim=outcome.feature_dim,
    )
    if outcome.features is not None:
        message.features.CopyFrom(types_pb2.ObjectRef(
            bucket=outcome.features.bucket, key=outcome.features.key,
            sha256=outcome.features.sha256, size=outcome.features.size))
    return message


class EmbedderServicer(embedder_pb2_grpc.EmbedderServiceServicer):
    def __init__(self, embedder: StoredEmbedder) -> None:
        self.embedder = embedder

    def Embed(self, request: embedder_pb2.EmbedRequest, context) -> Iterator[embedder_pb2.EmbedProgress]:
        job = job_from_proto(request)
        updates: queue.Queue = queue.Queue()
        cancellation = Cancellation()
        context.add_callback(cancellation.cancel)  # the client went away: stop embedding
        last = [0.0]

        def on_progress(state: Progress) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S or state.stage != "embedding":
                last[0] = now
                updates.put(progress_to_proto(state))

        def work() -> None:
            try:
                updates.put(self.embedder.run(job, on_progress, cancellation))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the handler thread, mapped there
                updates.put(exc)

        threading.Thread(target=work, name=f"embed-{job.job_id}", daemon=True).start()
        while True:
            item = updates.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, EmbedOutcome):
                yield outcome_to_proto(item)
                return
            yield item
