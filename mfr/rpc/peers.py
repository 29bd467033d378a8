"""Typed clients of the services, for the processes that drive them (the dispatcher).

Requests and answers are plain values (object refs, report dicts, job states);
protobuf stays inside this module, gRPC inside :mod:`mfr.rpc.calls`. A scoring
job's scores are decoded by :mod:`mfr.ranking.wire`, the one codec of ``ProtocolScore``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
from google.protobuf import json_format

from mfr.common.v1 import types_pb2
from mfr.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from mfr.ranking import wire
from mfr.rpc.calls import Inflight, stream, unary
from mfr.rpc.job_methods import STATE_NAME
from mfr.scorer.v1 import scorer_pb2, scorer_pb2_grpc
from mfr.storage import ObjectRef, StoredObject
from mfr.validator.v1 import validator_pb2, validator_pb2_grpc


def _ref(ref: ObjectRef | StoredObject) -> types_pb2.ObjectRef:
    return types_pb2.ObjectRef(bucket=ref.bucket, key=ref.key, sha256=ref.sha256,
                               size=getattr(ref, "size", 0))


def progress_json(progress: types_pb2.Progress, stage: str) -> dict:
    return {"stage": progress.stage or stage, "done": progress.done, "total": progress.total,
            "unit": progress.unit, "rate": round(progress.rate, 3),
            "eta_seconds": round(progress.eta_seconds, 1)}


@dataclass(frozen=True)
class Verdict:
    """The validator's answer: the report as JSON, and where the accepted model went."""

    report: dict
    ok: bool
    errors: list[tuple[str, str]]  # (code, message)
    feature_dim: int
    model_size_mb: float
    latency_ms: float
    model_key: str
    model_sha256: str  # of the model as stored for evaluation (batch made dynamic if needed)


class ValidatorClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = validator_pb2_grpc.ValidatorServiceStub(channel)

    def validate(self, upload: StoredObject, track_id: str, challenge_toml: str,
                 extracted: ObjectRef, *, timeout: float, inflight: Inflight) -> Verdict:
        request = validator_pb2.ValidateRequest(upload=_ref(upload), track_id=track_id,
                                                challenge_toml=challenge_toml,
                                                extracted_model=_ref(extracted))
        reply = unary("validator", self.stub.Validate, request, timeout=timeout, inflight=inflight)
        report = reply.report
        return Verdict(
            report=json_format.MessageToDict(report, preserving_proto_field_name=True,
                                             always_print_fields_with_no_presence=True),
            ok=report.ok, errors=[(e.code, e.message) for e in report.errors],
            feature_dim=report.feature_dim, model_size_mb=report.model_size_mb,
            latency_ms=report.latency_ms, model_key=reply.model.key or extracted.key,
            model_sha256=reply.model.sha256 or report.model_sha256)


@dataclass
class _JobView:
    """A job as its service reports it."""

    state: str  # queued, running, done, failed, cancelled
    progress: dict
    error: str = ""
    error_code: str = ""


@dataclass
class EmbeddingJob(_JobView):
    features: ObjectRef | None = None
    feature_dim: int = 0
    non_finite_rows: int = 0
    runtime: dict = field(default_factory=dict)  # name, version, device, batch_size, ...

    @classmethod
    def from_proto(cls, job: embedder_pb2.Job) -> EmbeddingJob:
        features = ObjectRef(job.features.bucket, job.features.key, job.features.sha256) \
            if job.features.key else None
        runtime = json_format.MessageToDict(job.runtime, preserving_proto_field_name=True) \
            if job.HasField("runtime") else {}
        progress = progress_json(job.progress, "embedding")
        progress.update(shards_done=job.shards_done, shards_total=job.shards_total)
        return cls(STATE_NAME.get(job.state, "queued"), progress, job.error, job.error_code,
                   features, job.feature_dim, job.non_finite_rows, runtime)


class _JobClient:
    """What the embedder's and the scorer's job APIs share: watch, get and cancel a job."""

    service = ""
    stub_type: type = type(None)  # the service's generated stub
    request_type: type = type(None)  # the service's GetJobRequest
    job_type: type = type(None)  # EmbeddingJob or ScoringJob (from_proto)

    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = self.stub_type(channel)

    def watch(self, job_id: str, *, inflight: Inflight) -> Iterator:
        request = self.request_type(job_id=job_id)
        for job in stream(self.service, self.stub.WatchJob, request, inflight=inflight):
            yield self.job_type.from_proto(job)

    def get(self, job_id: str, *, inflight: Inflight | None = None):
        return self.job_type.from_proto(unary(self.service, self.stub.GetJob,
                                              self.request_type(job_id=job_id), timeout=30,
                                              inflight=inflight))

    def cancel(self, job_id: str) -> None:
        unary(self.service, self.stub.CancelJob, self.request_type(job_id=job_id), timeout=10)


class EmbedderClient(_JobClient):
    service, stub_type = "embedder", embedder_pb2_grpc.EmbedderServiceStub
    request_type, job_type = embedder_pb2.GetJobRequest, EmbeddingJob

    def submit(self, job_id: str, model: ObjectRef, testset_id: str, input_mean: float,
               input_std: float, features: ObjectRef, challenge_toml: str, latency_ms: float,
               owner: str, *, inflight: Inflight) -> EmbeddingJob:
        request = embedder_pb2.SubmitJobRequest(
            job_id=job_id, model=_ref(model), testset_id=testset_id, input_mean=input_mean,
            input_std=input_std, features=_ref(features), challenge_toml=challenge_toml,
            latency_ms=latency_ms, owner=owner)
        return EmbeddingJob.from_proto(unary("embedder", self.stub.SubmitJob, request,
                                             timeout=120, inflight=inflight))


@dataclass
class ScoringJob(_JobView):
    result: ObjectRef | None = None
    scores: list = field(default_factory=list)  # ProtocolScore messages: see stored_scores

    def stored_scores(self) -> dict[str, dict]:
        """The scores in their stored form, by protocol id (InvalidInput: scores_invalid)."""
        return {score.protocol_id: wire.from_proto(score) for score in self.scores}

    @classmethod
    def from_proto(cls, job: scorer_pb2.Job) -> ScoringJob:
        result = ObjectRef(job.result.bucket, job.result.key, job.result.sha256) \
            if job.result.key else None
        return cls(STATE_NAME.get(job.state, "queued"), progress_json(job.progress, "scoring"),
                   job.error, job.error_code, result, list(job.scores))


class ScorerClient(_JobClient):
    service, stub_type = "scorer", scorer_pb2_grpc.ScorerServiceStub
    request_type, job_type = scorer_pb2.GetJobRequest, ScoringJob

    def submit(self, job_id: str, testset_id: str, challenge_toml: str, features: ObjectRef,
               *, inflight: Inflight) -> None:
        unary("scorer", self.stub.SubmitJob, scorer_pb2.SubmitJobRequest(
            job_id=job_id, testset_id=testset_id, challenge_toml=challenge_toml,
            features=_ref(features)), timeout=120, inflight=inflight)


@dataclass
class Peers:
    validator: ValidatorClient
    embedder: EmbedderClient
    scorer: ScorerClient

    @classmethod
    def connect(cls, channels: dict[str, grpc.Channel]) -> Peers:
        return cls(ValidatorClient(channels["validator"]), EmbedderClient(channels["embedder"]),
                   ScorerClient(channels["scorer"]))
