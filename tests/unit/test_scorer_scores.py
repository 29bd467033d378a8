"""Stored scores of every protocol kind and their ProtocolScore messages (the wire contract)."""

from __future__ import annotations

import json
import tomllib
from fractions import Fraction

import numpy as np
import pytest

from mfr.challenge import parse_challenge
from mfr.manifest import Manifest
from services.scorer.engine import ImageLabels, read_protocol_files, score
from services.scorer.scores import in_challenge_order, offline_fields, ranking_of, score_entry
from services.scorer.servicer import STAGE_TEXT, protocol_score

CHALLENGE = parse_challenge(tomllib.loads("""
id = "kinds"
[ranking]
weights = { all = 0.25, tar = 0.25, accuracy = 0.25, search = 0.25 }
[[protocols]]
id = "all"
kind = "all"
tag = "a"
far = 1e-2
[[protocols]]
id = "tar"
kind = "pairs"
pairs = "pairs.csv"
far = 1e-1
[[protocols]]
id = "accuracy"
kind = "pairs"
pairs = "pairs.csv"
metric = "accuracy"
folds = 2
[[protocols]]
id = "search"
kind = "identification"
gallery = "g"
probe = "p"
fpir = 1e-1
"""))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    rng = np.random.default_rng(3)
    identity = np.repeat(np.arange(30), 4)
    paths = tuple(f"i{row:03d}.png" for row in range(identity.size))
    tags = tuple(frozenset({"a", "g" if row % 4 == 0 and identity[row] % 3 else "p"})
                 for row in range(identity.size))
    manifest = Manifest(paths, tuple(f"id{i}" for i in identity), tags)
    features = (rng.standard_normal((30, 8))[identity]
                + rng.standard_normal((identity.size, 8))).astype(np.float32)
    features[7] = np.nan
    folder = tmp_path_factory.mktemp("kinds")
    rows = [f"{paths[a]},{paths[b]},{int(identity[a] == identity[b])}"
            for a, b in zip(rng.integers(0, identity.size, 40), rng.integers(0, identity.size, 40))
            if a != b] + [f"{paths[0]},{paths[1]},1", f"{paths[0]},{paths[4]},0"]
    rows = rows[len(rows) % 2:]  # an even count: 2 equal folds
    (folder / "pairs.csv").write_text("\n".join(["first,second,same", *rows]) + "\n")
    labels = ImageLabels.from_manifest(manifest, {"a", "g", "p"})
    files = read_protocol_files(CHALLENGE.protocols, folder, {p: i for i, p in enumerate(paths)})
    return score(features, labels, CHALLENGE, files=files, backend="cpu")


def stored(report) -> dict[str, dict]:
    """As the service keeps them: JSON (jsonb) round trip, protocol_id inside."""
    return {pid: json.loads(json.dumps({"protocol_id": pid, **score_entry(r)}))
            for pid, r in report.results.items()}


def test_a_stored_score_holds_mfr_score_json_fields_and_the_exact_rate(report):
    offline = report.to_json()["protocols"]
    for pid, entry in stored(report).items():
        protocol = report.results[pid].protocol
        assert offline_fields(entry) == offline[pid]
        assert (entry["kind"], entry["rate"]) == (protocol.kind, protocol.rate)
        assert float(Fraction(entry["rate_exact"])) == offline[pid][protocol.rate]
    scores = stored(report)
    assert scores["all"]["rate_exact"] == scores["all"]["tar_exact"]
    search = report.results["search"]
    assert scores["search"]["rate_exact"] == f"{search.hits}/{search.mated}"
    assert ranking_of(CHALLENGE, scores) == report.ranking_score


def test_protocol_score_fills_kind_rate_and_result_json_and_tar_fields_for_tar_kinds(report):
    offline = report.to_json(roc=True)
    for pid, entry in stored(report).items():
        message = protocol_score(entry)
        protocol = report.results[pid].protocol
        assert (message.protocol_id, message.kind, message.rate) == (pid, protocol.kind,
                                                                     protocol.rate)
        assert message.rate_exact == entry["rate_exact"]
        assert json.loads(message.result_json) == offline["protocols"][pid]
        if protocol.rate == "tar":
            expected = offline["protocols"][pid]
            assert (message.tar, message.genuine, message.impostor, message.genuine_accepted,
                    message.impostors_accepted) == (
                expected["tar"], expected["genuine"], expected["impostor"],
                expected["genuine_accepted"], expected["impostors_accepted"])
            assert message.tar_exact == message.rate_exact
            assert [p.tar for p in message.roc] == [p["tar"] for p in offline["roc"][pid]]
        else:
            assert (message.tar, message.far, message.genuine, message.tar_exact) == (0, 0, 0, "")
            assert not message.roc


def test_a_score_stored_before_the_kinds_reads_as_tar():
    old = {"protocol_id": "mask", "tar": 0.5, "far": 1e-4, "threshold": None, "genuine": 4,
           "impostor": 10, "genuine_accepted": 2, "impostors_accepted": 0, "tar_exact": "2/4",
           "roc": [], "rounds": 1, "candidates": 3}
    message = protocol_score(old)
    assert (message.kind, message.rate, message.rate_exact) == ("", "tar", "2/4")
    assert message.threshold == float("-inf") and message.tar == 0.5
    assert json.loads(message.result_json) == {
        "tar": 0.5, "far": 1e-4, "threshold": None, "genuine": 4, "impostor": 10,
        "genuine_accepted": 2, "impostors_accepted": 0}


def test_results_join_in_the_challenge_order_and_all_are_required(report):
    scores = stored(report)
    rounds = {"all": scores["all"]}
    listed = {pid: scores[pid] for pid in ("search", "accuracy", "tar")}
    assert list(in_challenge_order(CHALLENGE, rounds, listed)) == ["all", "tar", "accuracy",
                                                                   "search"]
    with pytest.raises(RuntimeError, match="search"):
        in_challenge_order(CHALLENGE, rounds, {k: v for k, v in listed.items() if k != "search"})
    assert "listed" in STAGE_TEXT
