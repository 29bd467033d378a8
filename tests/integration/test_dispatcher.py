"""The dispatcher on the real PostgreSQL and S3, against the gRPC contracts of its peers.

The ranker is the real servicer; validator, embedder and scorer are small
in-process stand-ins that speak their protos exactly (the real services are
exercised by tests/e2e/test_journey.py when they exist), so these tests can
make a peer fail, stall or crash on purpose.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from mfr.challenge import load_challenge, served_challenge
from mfr.common.v1 import types_pb2
from mfr.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from mfr.errors import Unavailable
from mfr.ranker.v1 import ranker_pb2_grpc
from mfr.records import lifecycle
from mfr.records.boards import Leaderboards
from mfr.records.leases import Leases
from mfr.records.results import Results
from mfr.rpc.client import channel
from mfr.rpc.peers import Peers
from mfr.scorer.v1 import scorer_pb2, scorer_pb2_grpc
from mfr.validator.v1 import validator_pb2, validator_pb2_grpc
from services.dispatcher.config import DispatchTuning
from services.dispatcher.dispatcher import Dispatcher
from services.dispatcher.stages import StageContext, Stages
from services.ranker.servicer import RankerServicer
from services.ranker.watch import BoardWatcher
from tests.journey_support import add_participant, add_submission, built_in_scores
from tests.rpc_support import serving
from tests.worker_support import wait_for

pytestmark = pytest.mark.integration


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
        self.fail = False

    def SubmitJob(self, request, context):
        self.jobs.setdefault(request.job_id, request)
        return scorer_pb2.Job(job_id=request.job_id, state=types_pb2.JOB_STATE_QUEUED)

    def _done(self, job_id):
        if self.fail:
            return scorer_pb2.Job(job_id=job_id, state=types_pb2.JOB_STATE_FAILED,
                                  error="features hold NaN rows only", error_code="features_invalid")
        job = scorer_pb2.Job(job_id=job_id, state=types_pb2.JOB_STATE_DONE)
        for pid, s in built_in_scores((3, 4), (1, 2)).items():
            roc = [types_pb2.RocPoint(**p) for p in s.pop("roc")]
            job.scores.append(types_pb2.ProtocolScore(protocol_id=pid, roc=roc, **s))
        return job

    def WatchJob(self, request, context):
        yield scorer_pb2.Job(job_id=request.job_id, state=types_pb2.JOB_STATE_RUNNING,
                             progress=types_pb2.Progress(done=3, total=9, unit="tiles"))
        yield self._done(request.job_id)

    def GetJob(self, request, context):
        return self._done(request.job_id)

    def CancelJob(self, request, context):
        return scorer_pb2.Job(job_id=request.job_id, state=types_pb2.JOB_STATE_CANCELLED)


@pytest.fixture
def rig(db_pool, object_store):
    challenge = load_challenge()
    boards = Leaderboards(db_pool, challenge)
    fakes = {"validator": FakeValidator(), "embedder": FakeEmbedder(), "scorer": FakeScorer()}
    ranker = RankerServicer(db_pool, boards, Results(db_pool, challenge, boards),
                            BoardWatcher(boards), admin_token="dispatch-token")
    with serving((validator_pb2_grpc.add_ValidatorServiceServicer_to_server, fakes["validator"],
                  "mfr.validator.v1.ValidatorService"),
                 (embedder_pb2_grpc.add_EmbedderServiceServicer_to_server, fakes["embedder"],
                  "mfr.embedder.v1.EmbedderService"),
                 (scorer_pb2_grpc.add_ScorerServiceServicer_to_server, fakes["scorer"],
                  "mfr.scorer.v1.ScorerService"),
                 (ranker_pb2_grpc.add_RankerServiceServicer_to_server, ranker,
                  "mfr.ranker.v1.RankerService"),
                 name="peers-test", max_workers=16) as server:
        ch = channel(f"127.0.0.1:{server.port}")
        yield _dispatcher_factory(db_pool, object_store, ch), fakes, db_pool
        ch.close()


def _dispatcher_factory(db_pool, object_store, ch):
    peers = Peers.connect({name: ch for name in ("validator", "embedder", "scorer", "ranker")},
                          admin_token="dispatch-token")

    def make(owner="dispatcher-1", **overrides):
        tuning = {"lease_s": 5.0, "poll_s": 0.1, "max_attempts": 4, "backoff_base_s": 0.01,
                  "backoff_max_s": 0.05, "workers": 1, **overrides}
        settings = DispatchTuning(**{f"dispatch_{k}": v for k, v in tuning.items()})
        leases = Leases(db_pool, owner, settings.dispatch_lease_s)
        stage = StageContext(leases, object_store, peers, served_challenge()[1], "testset-123")
        return Dispatcher(leases, Stages(stage), settings)

    return make


def _queued(pool, name="Ann"):
    with pool.connection() as conn:
        pid, _ = add_participant(conn, name)
        return add_submission(conn, pid, state="queued")


def _row(pool, sid):
    with pool.connection() as conn:
        row = conn.execute("SELECT * FROM submissions WHERE id = %s", (sid,)).fetchone()
        row["events"] = [e["state"] for e in conn.execute(
            "SELECT state FROM submission_events WHERE submission_id = %s ORDER BY id",
            (sid,)).fetchall()]
    return row


def _drain(dispatcher, rounds=50):
    outcomes = []
    for _ in range(rounds):
        outcome = dispatcher.run_once()
        if outcome is None:
            if not any(o.kind == "retry" for o in outcomes[-1:]):
                break
            time.sleep(0.06)
            continue
        outcomes.append(outcome)
    return outcomes


def test_a_submission_goes_through_every_stage_to_the_leaderboard(rig):
    make, fakes, pool = rig
    sid = _queued(pool)
    outcome = make().run_once()
    assert outcome.kind == "done"
    row = _row(pool, sid)
    assert row["state"] == "scored" and row["events"] == ["validating", "embedding", "scoring",
                                                          "scored"]
    assert row["ranking_exact"] == "9/16"  # 0.25 * 3/4 + 0.75 * 1/2, exactly
    assert row["validation"]["feature_dim"] == 512 and row["model_size_mb"] == 1.5
    assert row["lease_owner"] is None and row["progress"] is None
    embed = fakes["embedder"].requests[0]
    assert embed.job_id == sid and embed.testset_id == "testset-123"
    assert (embed.input_mean, embed.input_std) == (0.0, 1.0)  # as the validator detected
    assert embed.model.key == f"models/{sid}/run-1/model.onnx"
    assert list(fakes["scorer"].jobs) == [sid]
    assert "mask" in fakes["scorer"].jobs[sid].challenge_toml
    board = Leaderboards(pool, load_challenge()).board("A")
    assert [e.submission_id for e in board.entries] == [sid]
    assert make().run_once() is None


def test_a_rejected_model_stops_at_validation_with_its_codes(rig):
    make, fakes, pool = rig
    fakes["validator"].reject = True
    sid = _queued(pool)
    make().run_once()
    row = _row(pool, sid)
    assert row["state"] == "rejected" and row["error_code"] == "weight_dtype"
    assert [e["code"] for e in row["validation"]["errors"]] == ["weight_dtype"]
    assert fakes["embedder"].requests == []


def test_transient_errors_are_retried_with_backoff(rig):
    make, fakes, pool = rig
    fakes["validator"].unavailable = 2
    sid = _queued(pool)
    outcomes = _drain(make())
    assert [o.kind for o in outcomes] == ["retry", "retry", "done"]
    row = _row(pool, sid)
    assert row["state"] == "scored" and row["attempts"] == 3
    # One transition to validating, then a note per retry (with its reason); resumed there.
    assert row["events"] == ["validating"] * 3 + ["embedding", "scoring", "scored"]
    with pool.connection() as conn:
        notes = [e["detail"] for e in conn.execute(
            "SELECT detail FROM submission_events WHERE submission_id = %s AND detail ? 'retry_in_s'"
            " ORDER BY id", (sid,)).fetchall()]
    assert [n["attempt"] for n in notes] == [1, 2]
    assert all("validator warming up" in n["reason"] for n in notes)


def test_a_service_that_stays_down_fails_with_a_readable_reason(rig):
    make, fakes, pool = rig
    fakes["validator"].unavailable = 100
    sid = _queued(pool)
    outcomes = _drain(make(max_attempts=2))
    assert [o.kind for o in outcomes] == ["retry", "failed"]
    row = _row(pool, sid)
    assert row["state"] == "failed" and row["error_code"] == "unavailable"
    assert "gave up after 2 attempts" in row["error"] and "validator warming up" in row["error"]


def test_a_failed_scoring_job_fails_the_submission_at_once(rig):
    make, fakes, pool = rig
    fakes["scorer"].fail = True
    sid = _queued(pool)
    assert make().run_once().kind == "failed"
    row = _row(pool, sid)
    assert row["state"] == "failed" and row["error_code"] == "features_invalid"
    assert row["error"] == "scoring failed: features hold NaN rows only"


def test_another_dispatcher_resumes_a_crashed_ones_work(rig):
    make, fakes, pool = rig
    sid = _queued(pool)
    with pool.connection() as conn:
        conn.execute(
            "UPDATE submissions SET state = 'embedding', model_key = 'models/x/model.onnx',"
            " validation = '{\"ok\": true, \"input_mean\": 127.5, \"input_std\": 127.5}',"
            " lease_owner = 'crashed:1', lease_until = now() + interval '30 seconds' WHERE id = %s",
            (sid,))
    assert make().run_once() is None  # the lease is still live: nobody takes it
    with pool.connection() as conn:
        conn.execute("UPDATE submissions SET lease_until = now() - interval '1 second'"
                     " WHERE id = %s", (sid,))
    assert make("dispatcher-2").run_once().kind == "done"
    row = _row(pool, sid)
    assert row["state"] == "scored" and fakes["validator"].calls == 0
    assert fakes["embedder"].requests[0].model.key == "models/x/model.onnx"


# A short lease: the heartbeat notices the cancel first; a long one (production's): a
# progress note does. Either way the embedding job is withdrawn.
@pytest.mark.parametrize("lease_s", [1.5, 60.0])
def test_cancel_stops_a_running_submission(rig, lease_s):
    make, fakes, pool = rig
    fakes["embedder"].block.set()
    sid = _queued(pool)
    dispatcher = make(lease_s=lease_s)
    dispatcher.start()
    try:
        deadline = time.monotonic() + 10
        while not fakes["embedder"].requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _row(pool, sid)["state"] == "embedding"
        lifecycle.cancel(pool, sid)
        assert fakes["embedder"].cancelled.wait(5), "the embedding job was not cancelled"
        deadline = time.monotonic() + 5
        while dispatcher.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not dispatcher.active
    finally:
        dispatcher.stop()
    row = _row(pool, sid)
    assert row["state"] == "cancelled" and row["events"][-1] == "cancelled"


def test_a_stopping_dispatcher_leaves_the_embedding_running_for_the_next_one(rig):
    make, fakes, pool = rig
    fakes["embedder"].block.set()
    sid = _queued(pool)
    first = make("dispatcher-1", lease_s=30.0)
    first.start()
    try:
        wait_for(lambda: fakes["embedder"].requests, what="the embedding to be submitted")
    finally:
        first.stop()  # a graceful stop (a rolling update): gives the submission back
    assert not fakes["embedder"].cancelled.is_set()
    assert _row(pool, sid)["state"] == "embedding" and _row(pool, sid)["lease_owner"] is None
    fakes["embedder"].block.clear()
    assert make("dispatcher-2").run_once().kind == "done"  # re-attaches to the same job
    assert {r.job_id for r in fakes["embedder"].requests} == {sid}
    assert _row(pool, sid)["state"] == "scored"
    assert _row(pool, sid)["embedding"]["name"] == "onnxruntime-cpu"


def test_rerun_runs_again_under_a_new_job_id(rig):
    make, fakes, pool = rig
    sid = _queued(pool)
    make().run_once()
    lifecycle.rerun(pool, sid)
    assert make().run_once().kind == "done"
    row = _row(pool, sid)
    assert row["state"] == "scored" and row["run"] == 2
    assert list(fakes["scorer"].jobs) == [sid, f"{sid}-run2"]
    assert fakes["embedder"].requests[1].features.key == f"features/{sid}-run2.npy"


def test_oldest_first_and_backoff_is_respected(rig):
    _make, _, pool = rig
    with pool.connection() as conn:
        pid, _ = add_participant(conn, "Bo")
        from tests.journey_support import T0
        late = add_submission(conn, pid, state="queued", created_at=T0 + timedelta(hours=1))
        early = add_submission(conn, pid, state="queued", created_at=T0)
        conn.execute("UPDATE submissions SET next_attempt_at = now() + interval '1 hour'"
                     " WHERE id = %s", (early,))
    leases = Leases(pool, "probe", 5)
    claim = leases.claim()
    assert claim.id == late  # the early one waits for its back-off
    assert leases.claim() is None
