"""Accuracy and 1:N results through the real ranker (gRPC) to the board and the HTTP API.

A challenge with every kind (built-in plus MFR-Ongoing's protocols), ranked by
0.25 Mask + 0.25 MR-All + 0.25 LFW accuracy + 0.25 MR 1:N TPIR, on the real
PostgreSQL; results are recorded as the dispatcher records them: through the
wire codec (one typed result per kind), under the submission's lease.
"""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction

import httpx
import pytest

from mfr.errors import InvalidInput
from mfr.ranker.v1 import ranker_pb2, ranker_pb2_grpc
from mfr.records.boards import Leaderboards
from mfr.rpc.client import channel
from services.ranker.servicer import RankerServicer
from services.ranker.watch import BoardWatcher
from tests.journey_support import (
    T0,
    FakeClock,
    ServerThread,
    add_participant,
    add_submission,
    built_in_scores,
    record_result,
)
from tests.kinds_support import (
    accuracy_result,
    identification_result,
    kinds_challenge,
)
from tests.rpc_support import SERVICE_TOKEN, serving

pytestmark = pytest.mark.integration
ADMIN = "organiser-secret"
ANN_LFW = [597, 598, 596, 599, 595, 597, 600, 594, 598, 593]  # 5967 / 6000
BOB_LFW = [600] * 10


@pytest.fixture
def world(db_pool, object_store):
    from gateway.app import create_app

    challenge = kinds_challenge()
    clock = FakeClock(T0 + timedelta(days=1))
    boards = Leaderboards(db_pool, challenge, clock)
    servicer = RankerServicer(db_pool, boards, BoardWatcher(boards, poll_s=30, tick_s=0.1),
                              admin_token=ADMIN)
    app = create_app(db_pool, object_store, challenge, clock=clock, admin_token=ADMIN)
    with serving((ranker_pb2_grpc.add_RankerServiceServicer_to_server, servicer,
                  "mfr.ranker.v1.RankerService"), name="ranker-kinds") as server, \
            ServerThread(app) as web, httpx.Client(base_url=web.url, timeout=30) as client:
        ch = channel(f"127.0.0.1:{server.port}", SERVICE_TOKEN)
        yield ranker_pb2_grpc.RankerServiceStub(ch), client, challenge
        ch.close()


def _record(challenge, pool, sid, scores: dict):
    return record_result(pool, challenge, sid, scores, model_size_mb=40.0, latency_ms=2.0)


def test_mixed_rates_rank_exactly_and_reach_the_board_and_the_submission_view(world, db_pool):
    stub, client, challenge = world
    with db_pool.connection() as conn:
        ann, ann_token = add_participant(conn, "Ann", "Lab A")
        bob, _ = add_participant(conn, "Bob", "Lab B")
        sa = add_submission(conn, ann, created_at=T0)
        sb = add_submission(conn, bob, created_at=T0 + timedelta(minutes=1))
    # Ann: better TAR, worse LFW and 1:N; Bob wins on the accuracy and TPIR he adds.
    ann_scores = {**built_in_scores((9, 10), (5, 10)), "lfw": accuracy_result(ANN_LFW),
                  "mr-1n": identification_result(7, 9, rank1_hits=8)}
    bob_scores = {**built_in_scores((8, 10), (5, 10)), "lfw": accuracy_result(BOB_LFW),
                  "mr-1n": identification_result(9, 9)}
    ann_exact = Fraction(1, 4) * (Fraction(9, 10) + Fraction(1, 2) + Fraction(5967, 6000)
                                  + Fraction(7, 9))
    bob_exact = Fraction(1, 4) * (Fraction(8, 10) + Fraction(1, 2) + 1 + 1)
    assert _record(challenge, db_pool, sa, ann_scores) == ann_exact
    assert _record(challenge, db_pool, sb, bob_scores) == bob_exact

    board = stub.GetLeaderboard(ranker_pb2.GetLeaderboardRequest(track_id="A"))
    assert [e.participant for e in board.entries] == ["Bob", "Ann"]
    assert board.entries[1].protocols["lfw"] == pytest.approx(5967 / 6000)
    assert board.entries[1].protocols["mr-1n"] == pytest.approx(7 / 9)
    with db_pool.connection() as conn:
        row = conn.execute("SELECT ranking_exact, scores FROM submissions WHERE id = %s",
                           (sa,)).fetchone()
    assert Fraction(row["ranking_exact"]) == ann_exact
    assert row["scores"]["lfw"]["rate"] == "accuracy" and row["scores"]["mr-1n"]["hits"] == 7

    # The organiser's gRPC view gives each kind's result back, typed.
    admin = (("authorization", f"Bearer {ADMIN}"),)
    got = stub.GetSubmission(ranker_pb2.GetSubmissionRequest(submission_id=sa), metadata=admin)
    by_id = {s.protocol_id: s for s in got.scores}
    assert (by_id["lfw"].rate, by_id["lfw"].rate_exact) == ("accuracy", "1989/2000")
    assert by_id["lfw"].WhichOneof("result") == "accuracy"
    assert list(by_id["lfw"].accuracy.fold_accuracies) == [a / 600 for a in ANN_LFW]
    assert by_id["lfw"].accuracy.thresholds[-1] == float("inf")  # stored null: rejects all
    assert (by_id["mr-1n"].identification.hits, by_id["mr-1n"].identification.fpir) == (7, 1e-3)
    assert by_id["mask"].rate == "tar" and by_id["mask"].tar.genuine_accepted == 9

    # HTTP: the board's columns and the submission the web page reads.
    data = client.get("/v1/leaderboard/A").json()
    columns = {p["id"]: p for p in data["protocols"]}
    assert (columns["lfw"]["rate"], columns["mr-1n"]["rate"], columns["mask"]["rate"]) == \
        ("accuracy", "tpir", "tar")
    assert data["entries"][1]["protocols"]["lfw"] == 5967 / 6000
    assert data["entries"][1]["ranking_exact"] == f"{ann_exact.numerator}/{ann_exact.denominator}"
    csv_text = client.get("/v1/leaderboard/A/export?format=csv").text
    assert repr(5967 / 6000) in csv_text and repr(7 / 9) in csv_text
    own = client.get(f"/v1/submissions/{sa}", headers={"Authorization": f"Bearer {ann_token}"})
    for view in (own.json(), client.get(f"/v1/submissions/{sa}").json()):  # owner, public
        lfw, search, mask = view["scores"]["lfw"], view["scores"]["mr-1n"], view["scores"]["mask"]
        assert lfw["kind"] == "pairs" and lfw["rate"] == "accuracy"
        assert lfw["fold_accuracies"][6] == 1.0 and len(lfw["thresholds"]) == 10
        assert lfw["accuracy"] == 5967 / 6000 and lfw["pairs"] == 6000
        assert (search["tpir"], search["rank1"], search["mated"], search["nonmated"]) == \
            (7 / 9, 8 / 9, 9, 2000)
        assert search["threshold"] == 0.4375 and search["fpir"] == 1e-3
        assert set(mask) == {"tar", "far", "threshold", "genuine", "impostor",
                             "genuine_accepted", "impostors_accepted", "kind", "rate"}
        assert view["rate_exact"]["mr-1n"] == "7/9" and len(view["roc"]["mask"]) == 2
        assert view["roc"]["lfw"] == []


def test_junk_results_are_refused_and_nothing_is_stored(world, db_pool):
    _, _, challenge = world
    with db_pool.connection() as conn:
        pid, _ = add_participant(conn, "Mallory")
        sid = add_submission(conn, pid)
    junk = [{"lfw": accuracy_result(ANN_LFW) | {"rate_exact": "3/2"}},
            {"mr-1n": identification_result(7, 9) | {"rate_exact": "8/9"}},
            {"lfw": accuracy_result(ANN_LFW) | {"fold_accuracies": [1.0]}}]
    for scores in junk:
        with pytest.raises(InvalidInput) as err:
            _record(challenge, db_pool, sid, {**built_in_scores((1, 2), (1, 2)), **scores})
        assert err.value.code == "scores_invalid"
    with db_pool.connection() as conn:
        row = conn.execute("SELECT scores, state FROM submissions WHERE id = %s", (sid,)).fetchone()
    assert row["scores"] is None and row["state"] == "scoring"


def test_rows_stored_before_the_kinds_still_rank_and_show(world, db_pool):
    _, client, _ = world
    old = {"tar": 0.9, "far": 1e-4, "threshold": 0.3, "genuine": 10, "impostor": 100,
           "genuine_accepted": 9, "impostors_accepted": 0, "tar_exact": "9/10", "order": 0}
    with db_pool.connection() as conn:
        pid, _ = add_participant(conn, "Old")
        sid = add_submission(conn, pid, state="scored", scores={"mask": old},
                             ranking_exact="9/40")
    entry = client.get("/v1/leaderboard/A").json()["entries"][0]
    assert entry["submission_id"] == sid and entry["protocols"] == {"mask": 0.9}
    view = client.get(f"/v1/submissions/{sid}").json()
    assert view["scores"]["mask"] == {k: v for k, v in old.items()
                                      if k not in ("tar_exact", "order")} | {"rate": "tar"}
    assert view["rate_exact"] == {"mask": "9/10"}
