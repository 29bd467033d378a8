"""EmbedderService over gRPC: protobuf <-> domain translation only (services/embedder/control.py)."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from mfr.common.v1 import types_pb2
from mfr.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from mfr.rpc.job_methods import STATE_OF, JobMethods
from services.embedder.control import EmbedControl
from services.embedder.jobs import JobView


def _ref(ref: types_pb2.ObjectRef) -> dict:
    return {"bucket": ref.bucket, "key": ref.key, "sha256": ref.sha256}


class EmbedderServicer(JobMethods, embedder_pb2_grpc.EmbedderServiceServicer):
    def __init__(self, control: EmbedControl) -> None:
        self.control = control

    def SubmitJob(self, request: embedder_pb2.SubmitJobRequest,
                  context: grpc.ServicerContext) -> embedder_pb2.Job:
        return job_message(self.control.submit(
            request.job_id, _ref(request.model), request.testset_id, request.input_mean,
            request.input_std, _ref(request.features), request.challenge_toml,
            request.latency_ms, request.owner))

    @staticmethod
    def message(view: JobView) -> embedder_pb2.Job:
        return job_message(view)


def job_message(view: JobView) -> embedder_pb2.Job:
    row = view.row
    rate, eta = view.rates()
    at = Timestamp()
    at.GetCurrentTime()
    created = Timestamp()
    created.FromDatetime(row["created_at"])
    stage = "embedding" if row["shards_done"] < row["shards_total"] else "assembling"
    job = embedder_pb2.Job(
        job_id=view.id, state=STATE_OF[view.state],
        progress=types_pb2.Progress(done=row["images_done"], total=row["images_total"],
                                    unit="images", rate=rate, eta_seconds=eta, at=at,
                                    stage=stage if view.active else view.state),
        shards_done=row["shards_done"], shards_total=row["shards_total"],
        non_finite_rows=row["non_finite_rows"] or 0, feature_dim=row["feature_dim"] or 0,
        error=row["error"] or "", error_code=row["error_code"] or "", created_at=created)
    if view.state == "done":
        job.features.CopyFrom(types_pb2.ObjectRef(
            bucket=row["features_bucket"], key=row["features_key"],
            sha256=row["features_sha256"] or "", size=row["features_size"] or 0))
    used = row["runtime_used"]
    if used:
        job.runtime.CopyFrom(embedder_pb2.Runtime(
            name=used.get("name", ""), version=used.get("version", ""),
            device=used.get("device", ""), batch_size=row["batch_size"],
            fallback_reason=used.get("fallback_reason", "")))
    return job
