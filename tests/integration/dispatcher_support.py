"""Stand-ins for the dispatcher's peers that speak their protos exactly and can be told
to fail, stall or be cancelled (tests/integration/test_dispatcher.py)."""

from __future__ import annotations

import threading
import time

from mfr.common.v1 import types_pb2
from mfr.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from mfr.errors import Unavailable
from mfr.ranking import wire
from mfr.scorer.v1 import scorer_pb2, scorer_pb2_grpc
from mfr.validator.v1 import validator_pb2, validator_pb2_grpc
from tests.journey_support import built_in_scores


class FakeValidator(validator_pb2_grpc.ValidatorServiceServicer):
    def __init__(self) -> None:
        self.calls = 0
        self.unavailable = 0  # fail this many calls with UNAVAILABLE first
        self.reject = False

    def Validate(self, request, context):
        self.calls += 1
        if self.calls <= self.unavailable:
            raise Unavailable("validator warming up")
        report = types_pb2.ValidationReport(ok=not self.reject, track_id=request.track_id,
                                            feature_dim=512, model_size_mb=1.5, latency_ms=2.25,
                                            input_mean=0.0, input_std=1.0, model_sha256="ab12")
        if self.reject:
            report.errors.add(code="weight_dtype", message="initializer w is float16")
            return validator_pb2.ValidateResponse(report=report)
        return validator_pb2.ValidateResponse(report=report, model=request.extracted_model)


class FakeEmbedder(embedder_pb2_grpc.EmbedderServiceServicer):
    def __init__(self) -> None:
        self.requests: list = []
        self.block = threading.Event()  # set: the job runs until cancelled
        self.cancelled = threading.Event()

    def SubmitJob(self, request, context):
        self.requests.append(request)
        return embedder_pb2.Job(job_id=request.job_id, state=types_pb2.JOB_STATE_QUEUED)

    def _job(self, job_id):
        request = next(r for r in reversed(self.requests) if r.job_id == job_id)
        if self.cancelled.is_set():
            return embedder_pb2.Job(job_id=job_id, state=types_pb2.JOB_STATE_CANCELLED)
        if self.block.is_set():
            return embedder_pb2.Job(job_id=job_id, state=types_pb2.JOB_STATE_RUNNING,
                                    progress=types_pb2.Progress(done=1, total=2, unit="images"))
        return embedder_pb2.Job(
            job_id=job_id, state=types_pb2.JOB_STATE_DONE, shards_done=2, shards_total=2,
            features=request.features, feature_dim=512,
            runtime=embedder_pb2.Runtime(name="onnxruntime-cpu", version="onnxruntime 1.0",
                                         device="CPU, 1 threads", batch_size=32))

    def WatchJob(self, request, context):
        while True:
            job = self._job(request.job_id)
            yield job
            if job.state != types_pb2.JOB_STATE_RUNNING or not context.is_active():
                return
            time.sleep(0.05)

    def GetJob(self, request, context):
        return self._job(request.job_id)

    def CancelJob(self, request, context):
        self.cancelled.set()
        return self._job(request.job_id)


class FakeScorer(scorer_pb2_grpc.ScorerServiceServicer):
    def __init__(self) -> None:
        self.jobs: dict[str, scorer_pb2.SubmitJobRequest] = {}
        self.fail: list[str] = []  # each new job fails with the next code, while any are left
        self.failed: dict[str, str] = {}
        self.junk = 0  # this many jobs end done with a result that does not fit the challenge

    def SubmitJob(self, request, context):
        if request.job_id not in self.jobs and self.junk:
            self.junk -= 1
            self.failed[request.job_id] = "junk"
        elif request.job_id not in self.jobs and self.fail:
            self.failed[request.job_id] = self.fail.pop(0)
        self.jobs.setdefault(request.job_id, request)
        return scorer_pb2.Job(job_id=request.job_id, state=types_pb2.JOB_STATE_QUEUED)

    def _done(self, job_id):
        if self.failed.get(job_id) == "junk":  # an accuracy result for the TAR protocol mask
            job = scorer_pb2.Job(job_id=job_id, state=types_pb2.JOB_STATE_DONE)
            job.scores.add(protocol_id="mask", kind="cross", rate="tar", rate_exact="1/2",
                           accuracy={"accuracy": 0.5, "pairs": 2})
            return job
        if job_id in self.failed:
            return scorer_pb2.Job(job_id=job_id, state=types_pb2.JOB_STATE_FAILED,
                                  error=f"it went wrong ({self.failed[job_id]})",
                                  error_code=self.failed[job_id])
        job = scorer_pb2.Job(job_id=job_id, state=types_pb2.JOB_STATE_DONE)
        for pid, score in built_in_scores((3, 4), (1, 2)).items():
            job.scores.append(wire.to_proto(pid, score))
        return job

    def WatchJob(self, request, context):
        yield scorer_pb2.Job(job_id=request.job_id, state=types_pb2.JOB_STATE_RUNNING,
                             progress=types_pb2.Progress(done=3, total=9, unit="tiles"))
        yield self._done(request.job_id)

    def GetJob(self, request, context):
        return self._done(request.job_id)

    def CancelJob(self, request, context):
        return scorer_pb2.Job(job_id=request.job_id, state=types_pb2.JOB_STATE_CANCELLED)
