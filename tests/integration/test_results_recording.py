"""Recording a result: the lease holder's guarded transition scoring -> scored (real PostgreSQL).

One writer of a run's states: the dispatcher holding the lease writes the scores,
the exact ranking score and ``scored`` in one guarded UPDATE (mfr/records/results.py).
A result for a run that was cancelled, taken over or already recorded lands nowhere.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from mfr.challenge import load_challenge
from mfr.errors import InvalidInput
from mfr.records import lifecycle, results
from mfr.records.leases import LeaseLost
from tests.journey_support import add_participant, add_submission, built_in_scores, hold_lease

pytestmark = pytest.mark.integration
CHALLENGE = load_challenge()


def _submission(pool, name="Ann"):
    with pool.connection() as conn:
        pid, _ = add_participant(conn, name)
        return add_submission(conn, pid, state="scoring")


def _row(pool, sid):
    with pool.connection() as conn:
        row = conn.execute("SELECT * FROM submissions WHERE id = %s", (sid,)).fetchone()
        row["events"] = conn.execute(
            "SELECT state, detail FROM submission_events WHERE submission_id = %s ORDER BY id",
            (sid,)).fetchall()
    return row


def test_the_lease_holder_records_scores_ranking_and_scored_in_one_write(db_pool):
    sid = _submission(db_pool)
    leases, claim = hold_lease(db_pool, sid, owner="dispatcher-7")
    # Mask 3/4, MR-All 1/3: 0.25 * 3/4 + 0.75 * 1/3 = 7/16, not a float's neighbour.
    ranking = results.record(leases, claim, CHALLENGE, built_in_scores((3, 4), (1, 3)),
                             result_key="scoring/x/result.json")
    assert ranking == Fraction(7, 16) and claim.state == "scored"
    row = _row(db_pool, sid)
    assert (row["state"], row["ranking_exact"], row["ranking_score"]) == ("scored", "7/16", 0.4375)
    assert row["result_key"] == "scoring/x/result.json" and row["scored_at"] is not None
    assert (row["lease_owner"], row["lease_until"], row["progress"]) == (None, None, None)
    # jsonb keeps no key order: each score carries the challenge's.
    assert sorted(row["scores"], key=lambda pid: row["scores"][pid]["order"]) == \
        [p.id for p in CHALLENGE.protocols]
    assert row["scores"]["mr-all"]["tar_exact"] == "1/3"
    assert row["events"][-1]["state"] == "scored"
    assert row["events"][-1]["detail"] == {"run": 1, "by": "dispatcher-7", "ranking_score": 0.4375}


def test_a_result_for_a_run_cancelled_meanwhile_lands_nowhere(db_pool):
    sid = _submission(db_pool)
    leases, claim = hold_lease(db_pool, sid)
    lifecycle.cancel(db_pool, sid)
    with pytest.raises(LeaseLost):
        results.record(leases, claim, CHALLENGE, built_in_scores((1, 2), (1, 2)))
    row = _row(db_pool, sid)
    assert (row["state"], row["scores"], row["ranking_exact"]) == ("cancelled", None, None)
    assert [e["state"] for e in row["events"]] == ["cancelled"]


def test_a_dispatcher_whose_lease_was_taken_over_records_nothing(db_pool):
    sid = _submission(db_pool)
    leases, stale = hold_lease(db_pool, sid, owner="dispatcher-1")
    hold_lease(db_pool, sid, owner="dispatcher-2")  # the lease lapsed; another one took it
    with pytest.raises(LeaseLost):
        results.record(leases, stale, CHALLENGE, built_in_scores((1, 2), (1, 2)))
    row = _row(db_pool, sid)
    assert (row["state"], row["scores"], row["lease_owner"]) == ("scoring", None, "dispatcher-2")


def test_a_result_is_recorded_once(db_pool):
    sid = _submission(db_pool)
    leases, claim = hold_lease(db_pool, sid)
    results.record(leases, claim, CHALLENGE, built_in_scores((3, 4), (1, 2)))
    claim.row = {**claim.row, "state": "scoring"}  # as a confused caller would try again
    with pytest.raises(LeaseLost):
        results.record(leases, claim, CHALLENGE, built_in_scores((1, 4), (1, 4)))
    row = _row(db_pool, sid)
    assert row["ranking_exact"] == "9/16"
    assert [e["state"] for e in row["events"]].count("scored") == 1


def test_scores_that_do_not_fit_the_challenge_are_refused_and_the_run_is_untouched(db_pool):
    sid = _submission(db_pool)
    leases, claim = hold_lease(db_pool, sid)
    bad = built_in_scores((3, 4), (1, 2))
    bad["mask"]["genuine_accepted"] = 5  # 5 of 4 genuine pairs
    for scores in (bad, {**built_in_scores((3, 4), (1, 2)), "lfw": bad["mask"]}):
        with pytest.raises(InvalidInput) as err:
            results.record(leases, claim, CHALLENGE, scores)
        assert err.value.code == "scores_invalid"
    row = _row(db_pool, sid)
    assert (row["state"], row["scores"], row["lease_owner"]) == ("scoring", None,
                                                                 "test-dispatcher")
