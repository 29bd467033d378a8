"""The ranker's pure rules: exact ranking scores, the public-entry rule, ordering, export."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from mfr.challenge import load_challenge
from mfr.errors import InvalidInput
from mfr.ranking.board import Board, Candidate, choose_entries, export_csv
from mfr.ranking.scores import exact_ranking, exact_tar, normalise_scores, percent

T0 = datetime(2021, 7, 1, tzinfo=UTC)


def _score(accepted: int, genuine: int) -> dict:
    return {"tar": accepted / genuine, "far": 1e-4, "threshold": 0.3, "genuine": genuine,
            "impostor": 1000, "genuine_accepted": accepted, "impostors_accepted": 0}


def _cand(pid: str, sid: str, ranking: Fraction, minutes: int, chosen: bool = False,
          baseline: bool = False) -> Candidate:
    return Candidate(sid, pid, f"name-{pid}", "org", False, baseline, ranking, {"mask": 0.5},
                     1.0, 2.0, T0 + timedelta(minutes=minutes), chosen)


def test_ranking_is_the_weighted_sum_of_exact_fractions():
    challenge = load_challenge()
    scores = {"mask": _score(1, 3), "mr-all": _score(2, 7), "children": _score(5, 9)}
    assert exact_ranking(challenge, scores) == Fraction(1, 4) * Fraction(1, 3) + Fraction(3, 4) * Fraction(2, 7)


def test_ranking_is_none_without_every_weighted_protocol():
    assert exact_ranking(load_challenge(), {"mask": _score(1, 3)}) is None


def test_tar_comes_from_the_counts_not_the_float():
    score = _score(1, 3) | {"tar": 0.9}
    assert exact_tar(score) == Fraction(1, 3)
    clean = normalise_scores(load_challenge(), {"mask": score})
    assert clean["mask"]["tar"] == 1 / 3 and clean["mask"]["tar_exact"] == "1/3"


def test_impossible_counts_and_unknown_protocols_are_refused():
    with pytest.raises(InvalidInput):
        exact_tar(_score(5, 3))
    with pytest.raises(InvalidInput):
        normalise_scores(load_challenge(), {"nope": _score(1, 3)})


def test_scores_that_print_alike_are_still_ordered_exactly():
    # Equal as floats to 17 digits? No: these differ by 1e-18 but percent() prints them alike.
    a = Fraction(1, 3) + Fraction(1, 10**18)
    b = Fraction(1, 3)
    assert percent(float(a)) == percent(float(b)) == "33.333"
    entries = choose_entries([_cand("p1", "s1", b, 0), _cand("p2", "s2", a, 5)])
    assert [e.participant_id for e in entries] == ["p2", "p1"]


def test_ties_go_to_the_earlier_submission_whatever_the_input_order():
    cands = [_cand(f"p{i}", f"s{i}", Fraction(1, 2), minutes=10 - i) for i in range(6)]
    random.Random(7).shuffle(cands)
    entries = choose_entries(cands)
    assert [e.participant_id for e in entries] == [f"p{i}" for i in range(5, -1, -1)]
    assert [e.rank for e in entries] == [1, 2, 3, 4, 5, 6]


def test_public_entry_is_the_choice_else_the_best_with_earlier_on_ties():
    best_late = _cand("p", "late", Fraction(3, 4), 30)
    best_early = _cand("p", "early", Fraction(3, 4), 10)
    worse = _cand("p", "worse", Fraction(1, 4), 0)
    assert [e.submission_id for e in choose_entries([best_late, worse, best_early])] == ["early"]
    chosen = _cand("p", "worse", Fraction(1, 4), 0, chosen=True)
    assert [e.submission_id for e in choose_entries([best_late, chosen, best_early])] == ["worse"]


def test_one_entry_per_participant_and_baselines_are_ranked_and_marked():
    cands = [_cand("a", "a1", Fraction(1, 2), 0), _cand("a", "a2", Fraction(2, 3), 1),
             _cand("base", "b1", Fraction(3, 5), 2, baseline=True)]
    entries = choose_entries(cands)
    assert [(e.submission_id, e.baseline) for e in entries] == [("a2", False), ("b1", True)]


def test_hidden_organisation_is_null_in_json_and_blank_in_the_public_csv():
    cand = Candidate("s", "p", "Ann", "Secret Lab", True, False, Fraction(1, 2),
                     {"mask": 0.5, "mr-all": 0.5}, 10.0, 1.5, T0, False)
    entry = choose_entries([cand])[0]
    assert entry.to_json()["organisation"] is None
    assert entry.to_json(reveal=True)["organisation"] == "Secret Lab"
    board = Board("iccv21-mfr", "A", (entry,), frozen=False, updated_at=T0)
    challenge = load_challenge()
    assert "Secret Lab" not in export_csv(board, challenge, reveal=False)
    text = export_csv(board, challenge, reveal=True)
    header, row = text.strip().split("\n")
    assert header.startswith("rank,participant,organisation,organisation_hidden,baseline")
    assert "Secret Lab" in row and "1/2" in row and ",0.5," in row


def test_percent_has_three_decimals():
    assert percent(0.65767) == "65.767"
    assert percent(1.0) == "100.000"
    assert percent(None) == ""


def test_infinite_thresholds_become_null_for_json():
    score = _score(0, 3) | {"threshold": float("-inf"),
                            "roc": [{"far": 0.1, "tar": 0.0, "threshold": float("-inf")}]}
    clean = normalise_scores(load_challenge(), {"mask": score})["mask"]
    assert clean["threshold"] is None and clean["roc"][0]["threshold"] is None
    import json

    json.dumps(clean, allow_nan=False)  # what PostgreSQL's jsonb accepts
