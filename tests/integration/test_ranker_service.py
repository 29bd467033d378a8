"""RankerService over gRPC (in-process server, port 0) on the real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from fractions import Fraction

import grpc
import pytest

from mfr.challenge import load_challenge
from mfr.common.v1 import types_pb2
from mfr.ranker.v1 import ranker_pb2, ranker_pb2_grpc
from mfr.records.boards import Leaderboards
from mfr.records.results import Results
from mfr.rpc.client import channel
from mfr.rpc.interceptors import error_code_of
from services.ranker.servicer import RankerServicer
from services.ranker.watch import BoardWatcher
from tests.journey_support import T0, FakeClock, add_participant, add_submission, built_in_scores
from tests.rpc_support import SERVICE_TOKEN, serving

pytestmark = pytest.mark.integration
ADMIN = "organiser-secret"


@pytest.fixture
def ranker(db_pool):
    challenge = load_challenge()
    clock = FakeClock(T0)
    boards = Leaderboards(db_pool, challenge, clock)
    servicer = RankerServicer(db_pool, boards, Results(db_pool, challenge, boards),
                              BoardWatcher(boards, poll_s=30, tick_s=0.1), admin_token=ADMIN)
    with serving((ranker_pb2_grpc.add_RankerServiceServicer_to_server, servicer,
                  "mfr.ranker.v1.RankerService"), name="ranker-test") as server:
        ch = channel(f"127.0.0.1:{server.port}", SERVICE_TOKEN)
        yield ranker_pb2_grpc.RankerServiceStub(ch), clock, boards
        ch.close()


def _record(stub, sid, mask, mr_all, token=ADMIN):
    scores = []
    for pid, s in built_in_scores(mask, mr_all).items():
        roc = [types_pb2.RocPoint(**p) for p in s.pop("roc")]
        scores.append(types_pb2.ProtocolScore(protocol_id=pid, roc=roc, **s))
    return stub.RecordResult(ranker_pb2.RecordResultRequest(
        submission_id=sid, scores=scores, model_size_mb=12.5, latency_ms=3.25),
        metadata=(("authorization", f"Bearer {token}"),))


def test_record_result_ranks_by_the_challenge_weights(ranker, db_pool):
    stub, _, _ = ranker
    with db_pool.connection() as conn:
        a, _ = add_participant(conn, "Alice", "Lab A")
        b, _ = add_participant(conn, "Bob", "Lab B", hidden=True)
        sa = add_submission(conn, a, created_at=T0)
        sb = add_submission(conn, b, created_at=T0 + timedelta(minutes=1))
    # Alice: 0.25*0.9 + 0.75*0.5 = 0.6; Bob: 0.25*0.2 + 0.75*0.6 = 0.5
    reply = _record(stub, sa, (9, 10), (5, 10))
    assert reply.ranking_score == pytest.approx(0.6) and reply.rank == 1
    reply = _record(stub, sb, (2, 10), (6, 10))
    assert reply.ranking_score == pytest.approx(0.5) and reply.rank == 2
    board = stub.GetLeaderboard(ranker_pb2.GetLeaderboardRequest(track_id="A"))
    assert [e.participant for e in board.entries] == ["Alice", "Bob"]
    assert board.entries[0].protocols["mask"] == pytest.approx(0.9)
    assert board.entries[0].model_size_mb == 12.5 and board.entries[0].latency_ms == 3.25
    bob = board.entries[1]
    assert bob.organisation == "" and bob.organisation_hidden
    assert not board.frozen
    # Idempotent: the same result again changes nothing.
    assert _record(stub, sa, (9, 10), (5, 10)).rank == 1
    with db_pool.connection() as conn:
        events = conn.execute("SELECT count(*) AS n FROM submission_events WHERE submission_id = %s"
                              " AND state = 'scored'", (sa,)).fetchone()["n"]
        stored = conn.execute("SELECT ranking_exact, scores FROM submissions WHERE id = %s",
                              (sa,)).fetchone()
    assert events == 1
    assert Fraction(stored["ranking_exact"]) == Fraction(3, 5)
    assert len(stored["scores"]["mask"]["roc"]) == 2


def test_a_cancelled_submission_takes_no_result(ranker, db_pool):
    stub, _, _ = ranker
    with db_pool.connection() as conn:
        pid, _ = add_participant(conn, "Carol")
        sid = add_submission(conn, pid, state="cancelled")
    with pytest.raises(grpc.RpcError) as err:
        _record(stub, sid, (1, 2), (1, 2))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_code_of(err.value) == "not_scoring"


def test_private_submissions_are_not_found_without_the_organiser_token(ranker, db_pool):
    stub, _, _ = ranker
    with db_pool.connection() as conn:
        pid, _ = add_participant(conn, "Dan")
        best = add_submission(conn, pid, created_at=T0)
        worse = add_submission(conn, pid, created_at=T0 + timedelta(hours=1))
        queued = add_submission(conn, pid, state="queued")
    _record(stub, best, (9, 10), (9, 10))
    _record(stub, worse, (1, 10), (1, 10))
    shown = stub.GetSubmission(ranker_pb2.GetSubmissionRequest(submission_id=best))
    assert shown.public and shown.ranking_score == pytest.approx(0.9) and not shown.participant_id
    for hidden in (worse, queued, "not-a-uuid"):
        with pytest.raises(grpc.RpcError) as err:
            stub.GetSubmission(ranker_pb2.GetSubmissionRequest(submission_id=hidden))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    admin = (("authorization", f"Bearer {ADMIN}"),)
    private = stub.GetSubmission(ranker_pb2.GetSubmissionRequest(submission_id=worse),
                                 metadata=admin)
    assert private.participant_id == pid and not private.public
    listed = stub.ListSubmissions(ranker_pb2.ListSubmissionsRequest(track_id="A"))
    assert [s.submission_id for s in listed.submissions] == [best]
    listed = stub.ListSubmissions(ranker_pb2.ListSubmissionsRequest(participant_id=pid),
                                  metadata=admin)
    assert {s.submission_id for s in listed.submissions} == {best, worse, queued}


def test_board_freezes_when_closed_and_nothing_in_time_is_pending(ranker, db_pool):
    stub, clock, boards = ranker
    closes = boards.challenge.closes
    with db_pool.connection() as conn:
        pid, _ = add_participant(conn, "Eve")
        done = add_submission(conn, pid, created_at=closes - timedelta(days=1))
        late = add_submission(conn, pid, created_at=closes - timedelta(minutes=1))
    _record(stub, done, (1, 10), (1, 10))
    clock.now = closes + timedelta(minutes=5)
    board = stub.GetLeaderboard(ranker_pb2.GetLeaderboardRequest(track_id="A"))
    assert board.frozen  # closed: participants can change nothing
    with db_pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM leaderboard_snapshots").fetchone()["n"] == 0
    _record(stub, late, (9, 10), (9, 10))  # made in time, scored after the close: it counts
    board = stub.GetLeaderboard(ranker_pb2.GetLeaderboardRequest(track_id="A"))
    assert [e.submission_id for e in board.entries] == [late]
    with db_pool.connection() as conn:
        snap = conn.execute("SELECT frozen_by FROM leaderboard_snapshots").fetchone()
        # The snapshot is final: a re-run that scores lower changes nothing.
        conn.execute("UPDATE submissions SET ranking_exact = '0/1' WHERE id = %s", (late,))
    assert snap["frozen_by"] == "close"
    board = stub.GetLeaderboard(ranker_pb2.GetLeaderboardRequest(track_id="A"))
    assert [e.ranking_score for e in board.entries] == [pytest.approx(0.9)]


def test_watch_leaderboard_streams_each_change(ranker, db_pool):
    stub, _, _ = ranker
    with db_pool.connection() as conn:
        pid, _ = add_participant(conn, "Fay")
        sid = add_submission(conn, pid)
    stream = stub.WatchLeaderboard(ranker_pb2.GetLeaderboardRequest(track_id="A"), timeout=20)
    first = next(stream)
    assert list(first.entries) == []
    recorder = threading.Timer(0.3, lambda: _record(stub, sid, (3, 4), (1, 2)))
    recorder.start()
    second = next(stream)
    recorder.join()
    assert [e.submission_id for e in second.entries] == [sid]
    stream.cancel()


def test_unknown_track_is_invalid(ranker):
    stub, _, _ = ranker
    with pytest.raises(grpc.RpcError) as err:
        stub.GetLeaderboard(ranker_pb2.GetLeaderboardRequest(track_id="Z"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("token", ["", "not-the-token"])
def test_only_the_organisers_token_records_results(ranker, db_pool, token):
    stub, _, _ = ranker
    with db_pool.connection() as conn:
        pid, _ = add_participant(conn, "Mallory")
        sid = add_submission(conn, pid)
    with pytest.raises(grpc.RpcError) as err:
        _record(stub, sid, (10, 10), (10, 10), token=token)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_code_of(err.value) == "admin_token_required"
    with db_pool.connection() as conn:
        row = conn.execute("SELECT scores, state FROM submissions WHERE id = %s",
                           (sid,)).fetchone()
    assert row["scores"] is None and row["state"] != "scored"
