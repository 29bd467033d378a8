"""The stages a submission goes through, over gRPC: validate, embed, score, record.

Each stage starts from what PostgreSQL says (so a dispatcher that took over
from a crashed one resumes where it stopped) and ends with one guarded state
change (:mod:`mfr.records.leases`). Stages raise ``grpc.RpcError`` for the
dispatcher to sort into transient (retry with back-off) and permanent (failed,
with a reason the participant can read), or :class:`Permanent` for a failure
found here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import grpc
from google.protobuf import json_format

from mfr.records.leases import Claim, LeaseLost, Leases
from mfr.common.v1 import types_pb2
from mfr.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from mfr.logs import get_logger
from mfr.ranker.v1 import ranker_pb2, ranker_pb2_grpc
from mfr.scorer.v1 import scorer_pb2, scorer_pb2_grpc
from mfr.storage import ObjectStore
from mfr.validator.v1 import validator_pb2, validator_pb2_grpc

log = get_logger("services.dispatcher.dispatcher")
PROGRESS_EVERY_S = 1.0


class Permanent(Exception):
    """A failure that retrying will not fix; ``code`` is stable, the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Peers:
    validator: validator_pb2_grpc.ValidatorServiceStub
    embedder: embedder_pb2_grpc.EmbedderServiceStub
    scorer: scorer_pb2_grpc.ScorerServiceStub
    ranker: ranker_pb2_grpc.RankerServiceStub

    @classmethod
    def connect(cls, channels: dict[str, grpc.Channel]) -> Peers:
        return cls(validator_pb2_grpc.ValidatorServiceStub(channels["validator"]),
                   embedder_pb2_grpc.EmbedderServiceStub(channels["embedder"]),
                   scorer_pb2_grpc.ScorerServiceStub(channels["scorer"]),
                   ranker_pb2_grpc.RankerServiceStub(channels["ranker"]))


@dataclass
class Stage:
    """What the stages need besides the claim."""

    leases: Leases
    store: ObjectStore
    peers: Peers
    challenge_toml: str
    testset_id: str
    validate_timeout_s: float = 1800.0
    embed_timeout_s: float = 6 * 3600.0  # a stalled embedder is cut off and retried
    # The organisers' token: the ranker records results only for callers holding it.
    admin_token: str = ""


def progress_json(progress: types_pb2.Progress, stage: str) -> dict:
    return {"stage": progress.stage or stage, "done": progress.done, "total": progress.total,
            "unit": progress.unit, "rate": round(progress.rate, 3),
            "eta_seconds": round(progress.eta_seconds, 1)}


class Pipeline:
    def __init__(self, stage: Stage) -> None:
        self.s = stage

    def drive(self, claim: Claim) -> None:
        """Run the remaining stages; returns when the submission reached a final state."""
        steps = {"queued": self.start, "validating": self.validate, "embedding": self.embed,
                 "scoring": self.score}
        while claim.state in steps and not claim.lost.is_set():
            steps[claim.state](claim)
        if claim.lost.is_set():
            raise LeaseLost(claim.id)

    def start(self, claim: Claim) -> None:
        self.s.leases.advance(claim, "validating")

    # --- validation ----------------------------------------------------------------
    def validate(self, claim: Claim) -> None:
        row = claim.row
        models = self.s.store.buckets.models
        request = validator_pb2.ValidateRequest(
            upload=types_pb2.ObjectRef(bucket=row["upload_bucket"], key=row["upload_key"],
                                       sha256=row["upload_sha256"], size=row["upload_size"]),
            track_id=row["track_id"], challenge_toml=self.s.challenge_toml,
            extracted_model=types_pb2.ObjectRef(
                bucket=models, key=f"models/{claim.id}/run-{claim.run}/model.onnx"))
        call = self.s.peers.validator.Validate.future(request, timeout=self.s.validate_timeout_s)
        reply = self._await(claim, call)
        report = json_format.MessageToDict(reply.report, preserving_proto_field_name=True,
                                           always_print_fields_with_no_presence=True)
        if not reply.report.ok:
            first = reply.report.errors[0] if reply.report.errors else None
            self.s.leases.advance(
                claim, "rejected", {"errors": [e.code for e in reply.report.errors]},
                validation=report, error_code=first.code if first else "rejected",
                error=first.message if first else "the validator rejected the model",
                model_size_mb=reply.report.model_size_mb or None,
                latency_ms=reply.report.latency_ms or None)
            return
        model_key = reply.model.key or request.extracted_model.key
        self.s.leases.advance(
            claim, "embedding", {"feature_dim": reply.report.feature_dim},
            validation=report, model_key=model_key, model_size_mb=reply.report.model_size_mb,
            latency_ms=reply.report.latency_ms)

    # --- embedding -----------------------------------------------------------------
    def embed(self, claim: Claim) -> None:
        row = claim.row
        report = row["validation"] or {}
        request = embedder_pb2.EmbedRequest(
            job_id=claim.job_id,
            model=types_pb2.ObjectRef(bucket=self.s.store.buckets.models, key=row["model_key"],
                                      sha256=report.get("model_sha256", "")),
            testset_id=self.s.testset_id,
            input_mean=float(report.get("input_mean", 127.5)),
            input_std=float(report.get("input_std", 127.5)),
            features=types_pb2.ObjectRef(bucket=self.s.store.buckets.features,
                                         key=f"features/{claim.job_id}.npy"))
        stream = self.s.peers.embedder.Embed(request, timeout=self.s.embed_timeout_s)
        features = None
        last_note = 0.0
        claim.calls.append(stream)
        try:
            for message in stream:
                if message.features.key:
                    features = message
                elif time.monotonic() - last_note >= PROGRESS_EVERY_S:
                    last_note = time.monotonic()
                    note = progress_json(message.progress, "embedding")
                    note["non_finite_rows"] = message.non_finite_rows
                    self.s.leases.note(claim, progress=note)
        finally:
            claim.calls.remove(stream)
        if features is None:
            raise grpc_unavailable("the embedder ended the stream before the features were written")
        self.s.leases.advance(claim, "scoring", {"feature_dim": features.feature_dim,
                                                 "non_finite_rows": features.non_finite_rows},
                              features_key=features.features.key)

    # --- scoring and recording -----------------------------------------------------------
    def score(self, claim: Claim) -> None:
        scorer = self.s.peers.scorer
        job_id = claim.job_id
        scorer.SubmitJob(scorer_pb2.SubmitJobRequest(
            job_id=job_id, testset_id=self.s.testset_id, challenge_toml=self.s.challenge_toml,
            features=types_pb2.ObjectRef(bucket=self.s.store.buckets.features,
                                         key=claim.row["features_key"])), timeout=120)
        job = self._watch(claim, job_id)
        if job.state == scorer_pb2.JOB_STATE_FAILED:
            raise Permanent(job.error_code or "scoring_failed",
                            f"scoring failed: {job.error or 'no reason given'}")
        if job.state == scorer_pb2.JOB_STATE_CANCELLED:
            raise Permanent("scoring_cancelled", "the scoring job was cancelled")
        scores = list(job.scores)
        if job.result.key:
            self.s.leases.note(claim, result_key=job.result.key)
            self._add_roc(scores, job.result)
        try:
            self.s.peers.ranker.RecordResult(ranker_pb2.RecordResultRequest(
                submission_id=claim.id, scores=scores,
                model_size_mb=claim.row.get("model_size_mb") or 0.0,
                latency_ms=claim.row.get("latency_ms") or 0.0), timeout=60,
                metadata=(("authorization", f"Bearer {self.s.admin_token}"),))
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise LeaseLost(claim.id) from None  # cancelled or re-run meanwhile
            raise
        claim.row = {**claim.row, "state": "scored"}

    def _watch(self, claim: Claim, job_id: str) -> scorer_pb2.Job:
        finished = (scorer_pb2.JOB_STATE_DONE, scorer_pb2.JOB_STATE_FAILED,
                    scorer_pb2.JOB_STATE_CANCELLED)
        last_note = 0.0
        while True:
            stream = self.s.peers.scorer.WatchJob(scorer_pb2.GetJobRequest(job_id=job_id))
            claim.calls.append(stream)
            try:
                for job in stream:
                    if job.state in finished:
                        return job
                    if time.monotonic() - last_note >= PROGRESS_EVERY_S:
                        last_note = time.monotonic()
                        self.s.leases.note(claim, progress=progress_json(job.progress, "scoring"))
            except grpc.RpcError:
                if claim.lost.is_set():
                    self._cancel_scoring(job_id)
                    raise LeaseLost(claim.id) from None
                raise
            finally:
                claim.calls.remove(stream)
            if claim.lost.is_set():
                self._cancel_scoring(job_id)
                raise LeaseLost(claim.id)
            job = self.s.peers.scorer.GetJob(scorer_pb2.GetJobRequest(job_id=job_id), timeout=30)
            if job.state in finished:
                return job
            time.sleep(1.0)  # the stream ended early (a scorer restart): watch again

    def _cancel_scoring(self, job_id: str) -> None:
        try:
            self.s.peers.scorer.CancelJob(scorer_pb2.GetJobRequest(job_id=job_id), timeout=10)
        except grpc.RpcError as err:
            log.warning("cancel scoring job failed", job_id=job_id, code=err.code().name)

    def _add_roc(self, scores: list, result: types_pb2.ObjectRef) -> None:
        """ROC points from the result JSON when the job message carried none (best effort)."""
        if all(s.roc for s in scores):
            return
        try:
            document = json.loads(self.s.store.get_bytes(result.bucket, result.key))
        except Exception as exc:  # noqa: BLE001 - plots are optional, scores are not
            log.warning("result JSON unreadable", key=result.key, error=str(exc))
            return
        # {"roc": {pid: [points]}} (mfr score's layout) or {"protocols": {pid: {"roc": [...]}}}
        by_protocol = document.get("roc") or {}
        protocols = document.get("protocols") or {}
        for score in scores:
            points = (by_protocol.get(score.protocol_id)
                      or (protocols.get(score.protocol_id) or {}).get("roc") or [])
            if not score.roc and isinstance(points, list):
                score.roc.extend(types_pb2.RocPoint(
                    far=float(p["far"]), tar=float(p["tar"]),
                    threshold=float("-inf") if p.get("threshold") is None else float(p["threshold"]),
                    exact=bool(p.get("exact", True)))
                    for p in points if isinstance(p, dict))

    def _await(self, claim: Claim, future: grpc.Future):
        """Wait for a unary call, cancelling it when the claim is lost (e.g. cancelled)."""
        claim.calls.append(future)
        try:
            return future.result()
        except grpc.FutureCancelledError:
            raise LeaseLost(claim.id) from None
        finally:
            claim.calls.remove(future)


class _Unavailable(grpc.RpcError):
    def __init__(self, details: str) -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):
        return ()


def grpc_unavailable(details: str) -> grpc.RpcError:
    return _Unavailable(details)
