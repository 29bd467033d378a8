"""ScorerService over gRPC: protobuf <-> domain translation only (services/scorer/control.py)."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from mfr.common.v1 import types_pb2
from mfr.ranking import wire
from mfr.rpc.job_methods import STATE_OF, JobMethods
from mfr.scorer.v1 import scorer_pb2, scorer_pb2_grpc
from services.scorer.control import JobControl
from services.scorer.jobs import JobRequest, JobView

#: What a person reads for the stages that are not "scoring"/"merging" round r.
STAGE_TEXT = {"listed": "scoring pair lists, templates and 1:N"}


class ScorerServicer(JobMethods, scorer_pb2_grpc.ScorerServiceServicer):
    def __init__(self, control: JobControl) -> None:
        self.control = control

    def SubmitJob(self, request: scorer_pb2.SubmitJobRequest,
                  context: grpc.ServicerContext) -> scorer_pb2.Job:
        return job_message(self.control.submit(JobRequest(
            job_id=request.job_id, features_bucket=request.features.bucket,
            features_key=request.features.key, features_sha256=request.features.sha256,
            testset_id=request.testset_id, challenge_toml=request.challenge_toml)))

    @staticmethod
    def message(view: JobView) -> scorer_pb2.Job:
        return job_message(view)


def job_message(view: JobView) -> scorer_pb2.Job:
    row = view.row
    tiles_rate, pairs_rate, eta = view.rates()
    stage = view.stage
    if stage == "scoring":
        stage = f"scoring round {row['round']}"
        if pairs_rate:
            stage += f" ({pairs_rate:.3g} pairs/s)"
    elif stage == "merging":
        stage = f"merging round {row['round']}"
    else:
        stage = STAGE_TEXT.get(stage, stage)
    at = Timestamp()
    at.GetCurrentTime()
    job = scorer_pb2.Job(
        job_id=view.id, state=STATE_OF[view.state],
        progress=types_pb2.Progress(done=view.tiles_done, total=view.tiles_total, unit="tiles",
                                    rate=tiles_rate, eta_seconds=eta, stage=stage, at=at,
                                    pairs_per_second=pairs_rate),
        error=row["error"] or "", error_code=row["error_code"] or "")
    for score in row["scores"] or []:
        job.scores.append(wire.to_proto(score["protocol_id"], score))
    if row["ranking_score"] is not None:
        job.ranking_score = row["ranking_score"]
    if row["result_key"]:
        job.result.CopyFrom(types_pb2.ObjectRef(bucket=row["result_bucket"], key=row["result_key"],
                                                sha256=row["result_sha256"] or "",
                                                size=row["result_size"] or 0))
    return job

