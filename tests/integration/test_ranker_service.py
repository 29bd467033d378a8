"""RankerService over gRPC (in-process server, port 0) on the real PostgreSQL: it only reads.

Results are recorded as the dispatcher records them (tests/journey_support.py
``record_result``; tests/integration/test_results_recording.py for the write itself)."""

from __future__ import annotations

import threading
from datetime import timedelta

import grpc
import pytest

from mfr.challenge import load_challenge
from mfr.ranker.v1 import ranker_pb2, ranker_pb2_grpc
from mfr.records.boards import Leaderboards
from mfr.rpc.client import channel
from services.ranker.server import PUBLIC_METHODS
from services.ranker.servicer import RankerServicer
from services.ranker.watch import BoardWatcher
from tests.journey_support import (
    T0,
    FakeClock,
    add_participant,
    add_submission,
    built_in_scores,
    record_result,
)
from tests.rpc_support import SERVICE_TOKEN, serving

pytestmark = pytest.mark.integration
ADMIN = "organiser-secret"


@pytest.fixture
def ranker_server(db_pool):
    """The ranker's servicer behind a real server declaring the ranker's public methods."""
    challenge = load_challenge()
    clock = FakeClock(T0)
    boards = Leaderboards(db_pool, challenge, clock)
    servicer = RankerServicer(db_pool, boards, BoardWatcher(boards, poll_s=30, tick_s=0.1),
                              admin_token=ADMIN)
    with serving((ranker_pb2_grpc.add_RankerServiceServicer_to_server, servicer,
                  "mfr.ranker.v1.RankerService"), name="ranker-test",
                 public_methods=PUBLIC_METHODS) as server:
        yield f"127.0.0.1:{server.port}", clock, boards


@pytest.fixture
def ranker(ranker_server):
    """A platform process's view: calls carry the service token."""
    address, clock, boards = ranker_server
    with channel(address, SERVICE_TOKEN) as ch:
        yield ranker_pb2_grpc.RankerServiceStub(ch), clock, boards


def _record(boards, sid, mask, mr_all):
    return record_result(boards.pool, boards.challenge, sid, built_in_scores(mask, mr_all),
                         model_size_mb=12.5, latency_ms=3.25)


def test_the_board_ranks_recorded_results_by_the_challenge_weights(ranker, db_pool):
    stub, _, boards = ranker
    with db_pool.connection() as conn:
        a, _ = add_participant(conn, "Alice", "Lab A")
        b, _ = add_participant(conn, "Bob", "Lab B", hidden=True)
        sa = add_submission(conn, a, created_at=T0)
        sb = add_submission(conn, b, created_at=T0 + timedelta(minutes=1))
    # Alice: 0.25*0.9 + 0.75*0.5 = 0.6; Bob: 0.25*0.2 + 0.75*0.6 = 0.5
    _record(boards, sa, (9, 10), (5, 10))
    _record(boards, sb, (2, 10), (6, 10))
    board = stub.GetLeaderboard(ranker_pb2.GetLeaderboardRequest(track_id="A"))
    assert [e.participant for e in board.entries] == ["Alice", "Bob"]
    assert [e.ranking_score for e in board.entries] == [pytest.approx(0.6), pytest.approx(0.5)]
    assert board.entries[0].protocols["mask"] == pytest.approx(0.9)
    assert board.entries[0].model_size_mb == 12.5 and board.entries[0].latency_ms == 3.25
    bob = board.entries[1]
    assert bob.organisation == "" and bob.organisation_hidden
    assert not board.frozen


def test_the_ranker_only_reads():
    methods = {m.name for m in ranker_pb2.DESCRIPTOR.services_by_name["RankerService"].methods}
    assert methods == {"GetLeaderboard", "GetSubmission", "ListSubmissions", "WatchLeaderboard"}
    # ... which is why every one of them is public (no service token). A new method fails
    # here: decide whether it is a public read before adding it to PUBLIC_METHODS.
    assert PUBLIC_METHODS == {f"/mfr.ranker.v1.RankerService/{m}" for m in methods}


def test_private_submissions_are_not_found_without_the_organiser_token(ranker, db_pool):
    stub, _, boards = ranker
    with db_pool.connection() as conn:
        pid, _ = add_participant(conn, "Dan")
        best = add_submission(conn, pid, created_at=T0)
        worse = add_submission(conn, pid, created_at=T0 + timedelta(hours=1))
        queued = add_submission(conn, pid, state="queued")
    _record(boards, best, (9, 10), (9, 10))
    _record(boards, worse, (1, 10), (1, 10))
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


def test_watch_leaderboard_streams_each_change(ranker, db_pool):
    stub, _, boards = ranker
    with db_pool.connection() as conn:
        pid, _ = add_participant(conn, "Fay")
        sid = add_submission(conn, pid)
    stream = stub.WatchLeaderboard(ranker_pb2.GetLeaderboardRequest(track_id="A"), timeout=20)
    first = next(stream)
    assert list(first.entries) == []
    recorder = threading.Timer(0.3, lambda: _record(boards, sid, (3, 4), (1, 2)))
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


#: What an external tool may send: no service token at all, or one that is not the platform's.
OUTSIDE = [(), (("mfr-service-token", "not-the-service-token"),)]


@pytest.mark.parametrize("sent", OUTSIDE, ids=["no-token", "wrong-token"])
def test_external_tools_read_public_data_without_the_service_token(ranker_server, db_pool,
                                                                    sent):
    address, _, boards = ranker_server
    with db_pool.connection() as conn:
        pid, _ = add_participant(conn, "Gus")
        best = add_submission(conn, pid, created_at=T0)
        worse = add_submission(conn, pid, created_at=T0 + timedelta(hours=1))
    _record(boards, best, (9, 10), (9, 10))
    _record(boards, worse, (1, 10), (1, 10))
    with channel(address) as ch:
        stub = ranker_pb2_grpc.RankerServiceStub(ch)
        board = stub.GetLeaderboard(ranker_pb2.GetLeaderboardRequest(track_id="A"),
                                    metadata=sent, timeout=10)
        assert [e.submission_id for e in board.entries] == [best]
        stream = stub.WatchLeaderboard(ranker_pb2.GetLeaderboardRequest(track_id="A"),
                                       metadata=sent, timeout=10)
        assert [e.submission_id for e in next(stream).entries] == [best]
        stream.cancel()
        shown = stub.GetSubmission(ranker_pb2.GetSubmissionRequest(submission_id=best),
                                   metadata=sent, timeout=10)
        assert shown.public and shown.ranking_score == pytest.approx(0.9)
        assert not shown.participant_id
        listed = stub.ListSubmissions(ranker_pb2.ListSubmissionsRequest(participant_id=pid),
                                      metadata=sent, timeout=10)
        assert [s.submission_id for s in listed.submissions] == [best]
        with pytest.raises(grpc.RpcError) as err:  # private: as if it did not exist
            stub.GetSubmission(ranker_pb2.GetSubmissionRequest(submission_id=worse),
                               metadata=sent, timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        # The organisers' token alone opens private data: no service token either.
        private = stub.GetSubmission(ranker_pb2.GetSubmissionRequest(submission_id=worse),
                                     metadata=(*sent, ("authorization", f"Bearer {ADMIN}")),
                                     timeout=10)
        assert private.participant_id == pid and not private.public
