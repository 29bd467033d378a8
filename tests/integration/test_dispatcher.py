"""The dispatcher on the real PostgreSQL and S3, against the gRPC contracts of its peers.

Results are recorded by the dispatcher itself (no ranker call); validator,
embedder and scorer are small in-process stand-ins that speak their protos exactly (the real services are
exercised by tests/e2e/test_journey.py when they exist), so these tests can
make a peer fail, stall or crash on purpose.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from mfr.challenge import load_challenge, served_challenge
from mfr.embedder.v1 import embedder_pb2_grpc
from mfr.records import lifecycle
from mfr.records.boards import Leaderboards
from mfr.records.leases import Leases
from mfr.rpc.client import channel
from mfr.rpc.peers import Peers
from mfr.scorer.v1 import scorer_pb2_grpc
from mfr.validator.v1 import validator_pb2_grpc
from services.dispatcher.config import DispatchTuning
from services.dispatcher.dispatcher import Dispatcher
from services.dispatcher.stages import StageContext, Stages
from tests.integration.dispatcher_support import FakeEmbedder, FakeScorer, FakeValidator
from tests.journey_support import add_participant, add_submission
from tests.rpc_support import SERVICE_TOKEN, serving
from tests.worker_support import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def rig(db_pool, object_store):
    fakes = {"validator": FakeValidator(), "embedder": FakeEmbedder(), "scorer": FakeScorer()}
    with serving((validator_pb2_grpc.add_ValidatorServiceServicer_to_server, fakes["validator"],
                  "mfr.validator.v1.ValidatorService"),
                 (embedder_pb2_grpc.add_EmbedderServiceServicer_to_server, fakes["embedder"],
                  "mfr.embedder.v1.EmbedderService"),
                 (scorer_pb2_grpc.add_ScorerServiceServicer_to_server, fakes["scorer"],
                  "mfr.scorer.v1.ScorerService"),
                 name="peers-test", max_workers=16) as server:
        ch = channel(f"127.0.0.1:{server.port}", SERVICE_TOKEN)
        yield _dispatcher_factory(db_pool, object_store, ch), fakes, db_pool
        ch.close()


def _dispatcher_factory(db_pool, object_store, ch):
    peers = Peers.connect({name: ch for name in ("validator", "embedder", "scorer")})

    def make(owner="dispatcher-1", **overrides):
        tuning = {"lease_s": 5.0, "poll_s": 0.1, "max_attempts": 4, "backoff_base_s": 0.01,
                  "backoff_max_s": 0.05, "workers": 1, **overrides}
        settings = DispatchTuning(**{f"dispatch_{k}": v for k, v in tuning.items()})
        leases = Leases(db_pool, owner, settings.dispatch_lease_s)
        stage = StageContext(leases, object_store, peers, *served_challenge(), "testset-123")
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
    assert _quota_used(pool, sid) == 0  # a platform failure: the slot is given back


def test_a_job_the_model_made_fail_fails_the_submission_at_once(rig):
    make, fakes, pool = rig
    fakes["scorer"].fail = ["run_failed"]
    sid = _queued(pool)
    assert make().run_once().kind == "failed"
    row = _row(pool, sid)
    assert row["state"] == "failed" and row["error_code"] == "run_failed"
    assert row["error"] == "scoring failed: it went wrong (run_failed)"
    assert _quota_used(pool, sid) == 1  # the model's fault: the slot stays spent


def test_a_platform_fault_is_retried_with_a_new_job_and_costs_nothing(rig):
    make, fakes, pool = rig
    fakes["scorer"].fail = ["tile_failed", "shard_failed"]
    sid = _queued(pool)
    outcomes = _drain(make())
    assert [o.kind for o in outcomes] == ["retry", "retry", "done"]
    assert list(fakes["scorer"].jobs) == [sid, f"{sid}-retry1", f"{sid}-retry2"]
    row = _row(pool, sid)
    assert row["state"] == "scored" and row["retries"] == 2
    assert row["ranking_exact"] == "9/16"
    assert row["attempts"] == 1  # platform retries do not use up the transient attempts


def test_a_result_that_does_not_fit_the_challenge_is_our_fault_and_retried(rig):
    make, fakes, pool = rig
    fakes["scorer"].junk = 1
    sid = _queued(pool)
    outcomes = _drain(make())
    assert [o.kind for o in outcomes] == ["retry", "done"]
    assert outcomes[0].reason.startswith("the scores could not be recorded: score of protocol "
                                         "'mask': a cross protocol sends a 'tar' result")
    row = _row(pool, sid)
    assert row["state"] == "scored" and row["retries"] == 1 and row["ranking_exact"] == "9/16"
    assert list(fakes["scorer"].jobs) == [sid, f"{sid}-retry1"]
    with pool.connection() as conn:
        notes = [e["detail"]["reason"] for e in conn.execute(
            "SELECT detail FROM submission_events WHERE submission_id = %s"
            " AND detail ? 'platform_retry'", (sid,))]
    assert len(notes) == 1 and notes[0].startswith("scores_invalid: ")


def test_a_platform_fault_that_persists_fails_and_gives_the_slot_back(rig):
    make, fakes, pool = rig
    fakes["scorer"].fail = ["tile_failed"] * 3
    sid = _queued(pool)
    outcomes = _drain(make(platform_retries=2))
    row = _row(pool, sid)
    assert row["state"] == "failed" and row["error_code"] == "tile_failed"
    assert "platform fault, after 2 retries" in row["error"]
    assert [o.kind for o in outcomes] == ["retry", "retry", "failed"]
    assert _quota_used(pool, sid) == 0  # the platform's fault: the slot is given back


def _quota_used(pool, sid) -> int:
    from mfr.records.submissions import count_for_day

    with pool.connection() as conn:
        row = conn.execute("SELECT participant_id, challenge_id, quota_day FROM submissions"
                           " WHERE id = %s", (sid,)).fetchone()
        return count_for_day(conn, row["challenge_id"], row["participant_id"],
                             row["quota_day"])["counted"]


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
    row = _row(pool, sid)
    assert row["state"] == "embedding" and row["lease_owner"] is None
    assert row["attempts"] == 0  # letting go on a stop uses up no attempt
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


def test_a_participant_with_work_in_flight_waits_behind_one_without(rig):
    _make, _, pool = rig
    from tests.journey_support import T0
    with pool.connection() as conn:
        busy, _ = add_participant(conn, "Busy")
        calm, _ = add_participant(conn, "Calm")
        # Busy uploaded three models first; one of them is hanging in validation.
        first, second, third = (add_submission(conn, busy, state="queued",
                                               created_at=T0 + timedelta(minutes=m))
                                for m in (0, 1, 2))
        late = add_submission(conn, calm, state="queued", created_at=T0 + timedelta(hours=1))
    leases = Leases(pool, "probe", 30)
    assert leases.claim().id == first
    assert leases.claim().id == late  # Busy holds a slot: Calm goes first, though later
    assert leases.claim().id == second
    assert leases.claim().id == third


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
