"""Ranking over the protocol kinds: accuracy and TPIR beside TAR, exactly, checked."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from fractions import Fraction

import pytest

from mfr.challenge import load_challenge
from mfr.errors import InvalidInput
from mfr.ranking.board import Board, Candidate, choose_entries, export_csv
from mfr.ranking.scores import exact_ranking, exact_rate, normalise_scores, rate_value
from tests.journey_support import built_in_scores, score
from tests.kinds_support import accuracy_result, identification_result, kinds_challenge

T0 = datetime(2021, 7, 1, tzinfo=UTC)
LFW_CORRECT = [597, 598, 596, 599, 595, 597, 600, 594, 598, 593]  # mean 5967/6000


def _all_kinds(mask=(9, 10), mr_all=(5, 10), lfw=LFW_CORRECT, hits=(7, 9)) -> dict:
    return {**built_in_scores(mask, mr_all), "lfw": accuracy_result(lfw),
            "mr-1n": identification_result(*hits)}


def test_accuracy_and_identification_are_stored_with_their_kind_fields():
    clean = normalise_scores(kinds_challenge(), _all_kinds())
    lfw = clean["lfw"]
    assert (lfw["kind"], lfw["rate"], lfw["rate_exact"]) == ("pairs", "accuracy", "1989/2000")
    assert lfw["accuracy"] == 5967 / 6000 and len(lfw["fold_accuracies"]) == 10
    assert lfw["fold_accuracies"][6] == 1.0 and lfw["thresholds"][-1] is None
    assert lfw["pairs"] == 6000 and "tar" not in lfw and "genuine" not in lfw
    n = clean["mr-1n"]
    assert (n["kind"], n["rate"], n["rate_exact"]) == ("identification", "tpir", "7/9")
    assert n["tpir"] == 7 / 9 and n["fnir"] == pytest.approx(2 / 9) and n["fpir"] == 1e-3
    assert (n["mated"], n["nonmated"], n["hits"], n["nonmated_accepted"]) == (9, 2000, 7, 2)
    assert clean["mask"]["kind"] == "cross" and clean["mask"]["rate"] == "tar"
    assert clean["mask"]["rate_exact"] == clean["mask"]["tar_exact"] == "9/10"
    json.dumps(clean, allow_nan=False)  # what PostgreSQL's jsonb takes
    assert [rate_value(clean[p]) for p in ("mask", "lfw", "mr-1n")] == [0.9, 5967 / 6000, 7 / 9]


def test_ranking_weights_each_protocols_own_rate_exactly():
    challenge = kinds_challenge()
    clean = normalise_scores(challenge, _all_kinds())
    expected = Fraction(1, 4) * (Fraction(9, 10) + Fraction(5, 10) + Fraction(5967, 6000)
                                 + Fraction(7, 9))
    assert exact_ranking(challenge, clean) == expected
    # A one-hit difference in 1:N changes the exact order though floats could hide it.
    better = normalise_scores(challenge, _all_kinds(hits=(8, 9)))
    assert exact_ranking(challenge, better) - expected == Fraction(1, 36)


def test_the_sender_floats_do_not_decide_the_rate():
    bad = accuracy_result(LFW_CORRECT) | {"accuracy": 0.5}
    with pytest.raises(InvalidInput, match="disagrees") as err:
        normalise_scores(kinds_challenge(), {"lfw": bad})
    assert err.value.code == "scores_invalid"
    with pytest.raises(InvalidInput, match="hits / mated"):
        normalise_scores(kinds_challenge(),
                         {"mr-1n": identification_result(7, 9) | {"rate_exact": "8/9"}})


@pytest.mark.parametrize("junk", ["", None, "0.99", "3/2", "-1/2", "1/0", "nan", "1/3/4",
                                  " 1/2", 0.5])
def test_junk_rate_exact_is_refused(junk):
    with pytest.raises(InvalidInput) as err:
        normalise_scores(kinds_challenge(), {"lfw": accuracy_result(LFW_CORRECT) | {
            "rate_exact": junk, "accuracy": None}})
    assert err.value.code == "scores_invalid"


@pytest.mark.parametrize("protocol, change", [
    ("lfw", {"fold_accuracies": [0.99] * 9}),  # one fold short
    ("lfw", {"thresholds": "0.2"}),
    ("lfw", {"pairs": -1}),
    ("lfw", {"pairs": True}),
    ("lfw", {"accuracy_std": float("nan")}),
    ("lfw", {"fold_accuracies": [1.5] * 10}),
    ("mr-1n", {"hits": 10}),  # more hits than mated probes
    ("mr-1n", {"nonmated_accepted": 2001}),
    ("mr-1n", {"rank1": 0.5}),  # fewer rank-1 hits than hits
    ("mr-1n", {"threshold": "high"}),
    ("mr-1n", {"kind": "pairs"}),  # not the challenge's kind for it
    ("lfw", {"rate": "tar"}),
])
def test_impossible_or_mistyped_fields_are_refused(protocol, change):
    result = (accuracy_result(LFW_CORRECT) if protocol == "lfw" else identification_result(7, 9))
    with pytest.raises(InvalidInput) as err:
        normalise_scores(kinds_challenge(), {protocol: result | change})
    assert err.value.code == "scores_invalid"


@pytest.mark.parametrize("protocol, missing", [
    ("lfw", "fold_accuracies"), ("lfw", "thresholds"), ("lfw", "pairs"), ("lfw", "accuracy_std"),
    ("mr-1n", "mated"), ("mr-1n", "hits"), ("mr-1n", "rank1"), ("mr-1n", "threshold"),
    ("mr-1n", "rate_exact")])
def test_missing_fields_are_refused(protocol, missing):
    result = (accuracy_result(LFW_CORRECT) if protocol == "lfw" else identification_result(7, 9))
    result.pop(missing)
    with pytest.raises(InvalidInput, match=missing if missing != "rate_exact" else "rate_exact"):
        normalise_scores(kinds_challenge(), {protocol: result})


def test_old_senders_tar_only_results_for_an_accuracy_protocol_are_refused():
    with pytest.raises(InvalidInput, match="rate_exact"):
        normalise_scores(kinds_challenge(), {"lfw": score(5, 10)})


def test_unknown_fields_are_dropped_and_no_tie_identification_threshold_is_null():
    result = identification_result(0, 9) | {"threshold": None, "secret": "x"}
    clean = normalise_scores(kinds_challenge(), {"mr-1n": result})["mr-1n"]
    assert "secret" not in clean and clean["threshold"] is None and clean["tpir"] == 0.0


def test_old_rows_and_old_senders_are_tar():
    challenge = load_challenge()
    old_row = {"tar": 0.9, "far": 1e-4, "threshold": 0.3, "genuine": 10, "impostor": 100,
               "genuine_accepted": 9, "impostors_accepted": 0, "tar_exact": "9/10", "order": 0}
    assert exact_rate(old_row) == Fraction(9, 10) and rate_value(old_row) == 0.9
    # An old sender: no kind, rate or rate_exact; a TAR whose rate_exact lies is refused.
    clean = normalise_scores(challenge, built_in_scores((9, 10), (5, 10)))
    assert exact_ranking(challenge, clean) == Fraction(1, 4) * Fraction(9, 10) + Fraction(3, 8)
    with pytest.raises(InvalidInput, match="genuine_accepted / genuine"):
        normalise_scores(challenge, {"mask": score(9, 10) | {"rate_exact": "1/2"}})


def test_board_columns_carry_each_protocols_rate():
    challenge = kinds_challenge()
    clean = normalise_scores(challenge, _all_kinds())
    protocols = {pid: rate_value(s) for pid, s in clean.items()}
    cand = Candidate("s1", "p1", "Ann", "Lab", False, False, exact_ranking(challenge, clean),
                     protocols, 10.0, 1.5, T0, False)
    board = Board(challenge.id, "A", tuple(choose_entries([cand])), frozen=False, updated_at=T0)
    data = board.to_json(challenge)
    columns = {p["id"]: p for p in data["protocols"]}
    assert (columns["lfw"]["kind"], columns["lfw"]["rate"], columns["lfw"]["far"]) == \
        ("pairs", "accuracy", None)
    assert (columns["mr-1n"]["rate"], columns["mr-1n"]["fpir"]) == ("tpir", 1e-3)
    assert (columns["mask"]["rate"], columns["mask"]["far"]) == ("tar", 1e-4)
    entry = data["entries"][0]["protocols"]
    assert entry["lfw"] == 5967 / 6000 and entry["mr-1n"] == 7 / 9 and entry["mask"] == 0.9
    header, row = export_csv(board, challenge).strip().split("\n")
    cells = dict(zip(header.split(","), row.split(","), strict=True))
    assert float(cells["lfw"]) == 5967 / 6000 and float(cells["mr-1n"]) == 7 / 9
    assert cells["cfp-fp"] == ""  # not scored
