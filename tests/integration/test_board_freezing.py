"""Freezing boards on the real PostgreSQL: reads never write; the dispatcher's closer
freezes each track once the window closed and nothing made in time is pending; which
submissions a board shows (``shown_ids``, ``is_shown``)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from fractions import Fraction

import httpx
import pytest

from mfr.challenge import load_challenge
from mfr.db.pool import make_pool
from mfr.ranking.scores import fraction_text
from mfr.records import lifecycle, submissions
from mfr.records.boards import Leaderboards
from services.dispatcher.closer import Closer
from services.ranker.watch import BoardWatcher
from tests.journey_support import (
    T0,
    FakeClock,
    ServerThread,
    add_participant,
    add_submission,
    built_in_scores,
    gateway_app,
)

pytestmark = pytest.mark.integration
ADMIN = "admin-token-for-tests"
CLOSES = load_challenge().closes


def _scored(conn, pid: str, mask: tuple[int, int], mr_all: tuple[int, int],
            created_at=T0, track: str = "A") -> str:
    """A scored submission, as the dispatcher leaves it (built-in weights: 1/4, 3/4)."""
    ranking = Fraction(*mask) / 4 + Fraction(*mr_all) * 3 / 4
    return add_submission(conn, pid, track=track, state="scored", created_at=created_at,
                          scores=built_in_scores(mask, mr_all), ranking_exact=fraction_text(ranking))


def _snapshots(pool) -> dict[str, str]:
    with pool.connection() as conn:
        rows = conn.execute("SELECT track_id, frozen_by FROM leaderboard_snapshots").fetchall()
    return {r["track_id"]: r["frozen_by"] for r in rows}


def _make_scored(pool, sid: str, mask: tuple[int, int], mr_all: tuple[int, int]) -> None:
    with pool.connection() as conn:
        conn.execute("UPDATE submissions SET state = 'scored', ranking_exact = %s WHERE id = %s",
                     (fraction_text(Fraction(*mask) / 4 + Fraction(*mr_all) * 3 / 4), sid))


def test_reading_a_closed_board_writes_nothing(db_pool, object_store):
    app, _, clock = gateway_app(db_pool, object_store, T0, ADMIN)
    with db_pool.connection() as conn:
        pid, token = add_participant(conn, "Ann", "Lab")
        done = _scored(conn, pid, (9, 10), (9, 10))
    clock.now = CLOSES + timedelta(hours=1)  # closed, nothing pending: final, not frozen yet
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        board = client.get("/v1/leaderboard/A").json()
        assert board["frozen"] and board["closed"] and board["frozen_at"] is None
        assert [e["submission_id"] for e in board["entries"]] == [done]
        for path in ("/v1/leaderboard/B", "/v1/leaderboard/A/export?format=csv",
                     "/v1/leaderboard/A/export?format=json", f"/v1/submissions/{done}"):
            assert client.get(path).status_code == 200, path
        mine = client.get("/v1/submissions", headers={"Authorization": f"Bearer {token}"})
        assert mine.json()["submissions"][0]["public"] is True
        admin = client.get("/v1/admin/leaderboard/A/export", headers={"Authorization": f"Bearer {ADMIN}"})
        assert admin.status_code == 200
    boards = Leaderboards(db_pool, load_challenge(), FakeClock(CLOSES + timedelta(hours=1)))
    assert boards.board("A").frozen and boards.shown_ids({"A", "B"}) == {done}
    with db_pool.connection() as conn:
        assert boards.is_shown(submissions.get(conn, done)) and boards.frozen("A", conn)
    watch = BoardWatcher(boards).watch("A", lambda: True)  # the ranker's WatchLeaderboard
    try:
        assert [e.submission_id for e in next(watch).entries] == [done]
    finally:
        watch.close()
    with db_pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM leaderboard_snapshots").fetchone()["n"] == 0


def test_the_closer_freezes_a_track_once_nothing_made_in_time_is_pending(db_pool):
    clock = FakeClock(CLOSES - timedelta(minutes=1))
    boards = Leaderboards(db_pool, load_challenge(), clock)
    closer = Closer(boards)
    with db_pool.connection() as conn:
        eve, _ = add_participant(conn, "Eve")
        base, _ = add_participant(conn, "Baseline", baseline=True)
        done = _scored(conn, eve, (1, 10), (1, 10), created_at=CLOSES - timedelta(days=1))
        late = add_submission(conn, eve, state="scoring", created_at=CLOSES - timedelta(minutes=2))
        # Made after the close (a baseline may be): not waited for.
        add_submission(conn, base, state="queued", created_at=CLOSES + timedelta(minutes=1))
    assert closer.tick() == [] and _snapshots(db_pool) == {}  # B is final, but not closed yet
    clock.now = CLOSES + timedelta(minutes=5)
    assert closer.tick() == ["B"]  # A waits for the in-time submission still being scored
    assert closer.tick() == [] and _snapshots(db_pool) == {"B": "close"}
    board = boards.board("A")
    assert board.frozen and board.frozen_at is None and [e.submission_id for e in board.entries] == [done]
    _make_scored(db_pool, late, (9, 10), (9, 10))  # made in time, scored after the close: it counts
    assert closer.tick() == ["A"]
    assert closer.tick() == [] and _snapshots(db_pool) == {"A": "close", "B": "close"}
    lifecycle.rerun(db_pool, late)  # the snapshot is final: a re-run changes nothing
    board = boards.board("A")
    assert board.frozen_at == clock.now and [e.submission_id for e in board.entries] == [late]
    assert board.entries[0].ranking_score == pytest.approx(0.9)
    assert closer.tick() == []


def test_closers_in_several_dispatchers_record_one_snapshot_per_track(db_pool):
    clock = FakeClock(CLOSES + timedelta(minutes=5))
    with db_pool.connection() as conn:
        pid, _ = add_participant(conn, "Fay")
        _scored(conn, pid, (5, 10), (5, 10), created_at=CLOSES - timedelta(hours=1))
    closers = [Closer(Leaderboards(db_pool, load_challenge(), clock)) for _ in range(4)]
    start = threading.Barrier(len(closers))
    frozen: list[str] = []

    def tick(closer: Closer) -> None:
        start.wait()
        frozen.extend(closer.tick())

    threads = [threading.Thread(target=tick, args=(c,)) for c in closers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(frozen) == ["A", "B"]  # each track frozen by exactly one of them
    assert _snapshots(db_pool) == {"A": "close", "B": "close"}


def test_the_closer_thread_outlives_a_database_outage(database, db_pool):
    with db_pool.connection() as conn:
        pid, _ = add_participant(conn, "Gus")
        _scored(conn, pid, (5, 10), (5, 10), created_at=CLOSES - timedelta(hours=1))
    unreachable = make_pool(database.url, schema=database.schema, name="closer-test")  # not open
    closer = Closer(Leaderboards(unreachable, load_challenge(), FakeClock(CLOSES + timedelta(hours=1))),
                    tick_s=0.05)
    closer.start()
    try:
        time.sleep(0.3)  # several failed ticks
        assert closer.alive() and _snapshots(db_pool) == {}
        unreachable.open(wait=True, timeout=10)
        deadline = time.monotonic() + 10
        while _snapshots(db_pool) != {"A": "close", "B": "close"} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _snapshots(db_pool) == {"A": "close", "B": "close"}
    finally:
        closer.stop(5)
        unreachable.close()
    assert not closer.alive()


def test_shown_ids_and_is_shown_follow_the_public_entry_rule_and_the_snapshot(db_pool):
    boards = Leaderboards(db_pool, load_challenge(), FakeClock(T0 + timedelta(days=1)))
    with db_pool.connection() as conn:
        ann, _ = add_participant(conn, "Ann")
        bob, _ = add_participant(conn, "Bob")
        cat, _ = add_participant(conn, "Cat")
        base, _ = add_participant(conn, "Baseline", baseline=True)
        ann_best = _scored(conn, ann, (9, 10), (9, 10))
        ann_worse = _scored(conn, ann, (2, 10), (2, 10), created_at=T0 + timedelta(minutes=5))
        ann_on_b = _scored(conn, ann, (3, 10), (3, 10), track="B")
        bob_best = _scored(conn, bob, (8, 10), (8, 10))
        bob_chosen = _scored(conn, bob, (1, 10), (1, 10), created_at=T0 + timedelta(minutes=1))
        conn.execute("UPDATE submissions SET public = true WHERE id = %s", (bob_chosen,))
        cat_queued = add_submission(conn, cat, state="queued")
        cat_rejected = add_submission(conn, cat, state="rejected")
        baseline = _scored(conn, base, (5, 10), (5, 10))
        elsewhere = add_submission(conn, ann, challenge="another-challenge", state="scored",
                                   scores=built_in_scores((10, 10), (10, 10)), ranking_exact="1/1")
    owners = {ann: {ann_best, ann_worse, ann_on_b, elsewhere}, bob: {bob_best, bob_chosen},
              cat: {cat_queued, cat_rejected}, base: {baseline}}
    every = set().union(*owners.values())

    def check(expected: set[str]) -> None:
        on_boards = {e.submission_id for t in ("A", "B") for e in boards.board(t).entries}
        assert on_boards == expected  # what shown_ids answered when it read whole boards
        assert boards.shown_ids({"A", "B", "Z"}) == expected
        assert boards.shown_ids({"B"}) == expected & {ann_on_b}
        for pid, own in owners.items():  # a participant's own list
            assert boards.shown_ids({"A", "B"}, pid) & own == expected & own
        with db_pool.connection() as conn:
            assert {sid for sid in every if boards.is_shown(submissions.get(conn, sid))} == expected

    check({ann_best, ann_on_b, bob_chosen, baseline})
    boards.freeze("A")
    lifecycle.rerun(db_pool, ann_best)  # live, Ann's worse one would now be shown; frozen, not
    check({ann_best, ann_on_b, bob_chosen, baseline})
    _make_scored(db_pool, ann_best, (1, 10), (1, 10))
    boards.unfreeze("A")
    check({ann_worse, ann_on_b, bob_chosen, baseline})
