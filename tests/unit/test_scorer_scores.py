"""Stored scores of every protocol kind, and their ProtocolScore messages (the wire contract:
one typed result per kind, encoded and decoded by mfr.ranking.wire)."""

from __future__ import annotations

import json
import tomllib
from fractions import Fraction

import numpy as np
import pytest

from mfr.challenge import parse_challenge
from mfr.errors import InvalidInput
from mfr.manifest import Manifest
from mfr.ranking import wire
from mfr.ranking.scores import exact_ranking
from services.scorer.engine import ImageLabels, read_protocol_files, score
from services.scorer.scores import in_challenge_order, score_entry
from services.scorer.servicer import STAGE_TEXT

# What the service adds to ``mfr score --json``'s fields of a protocol.
SERVICE_FIELDS = {"protocol_id", "kind", "rate", "rate_exact", "tar_exact", "roc", "rounds",
                  "candidates"}

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
        assert {k: v for k, v in entry.items() if k not in SERVICE_FIELDS} == offline[pid]
        assert (entry["kind"], entry["rate"]) == (protocol.kind, protocol.rate)
        assert float(Fraction(entry["rate_exact"])) == offline[pid][protocol.rate]
    scores = stored(report)
    assert scores["all"]["rate_exact"] == scores["all"]["tar_exact"]
    search = report.results["search"]
    assert scores["search"]["rate_exact"] == f"{search.hits}/{search.mated}"
    assert exact_ranking(CHALLENGE, scores) == report.ranking_score


def test_each_kind_travels_as_its_own_typed_result_and_comes_back_the_same(report):
    offline = report.to_json(roc=True)
    cases = {"all": "tar", "tar": "tar", "accuracy": "accuracy", "search": "identification"}
    for pid, entry in stored(report).items():
        message = wire.to_proto(pid, entry)
        protocol = report.results[pid].protocol
        assert (message.protocol_id, message.kind, message.rate, message.rate_exact) == (
            pid, protocol.kind, protocol.rate, entry["rate_exact"])
        assert message.WhichOneof("result") == cases[pid]
        back = wire.from_proto(type(message).FromString(message.SerializeToString()))
        # Exactly mfr score --json's fields of the kind, plus the head (and the TAR extras).
        assert {k: v for k, v in back.items() if k not in SERVICE_FIELDS | {"fpir"}} \
            == offline["protocols"][pid]
        if protocol.rate == "tar":
            assert back["tar_exact"] == entry["tar_exact"] == message.tar.tar_exact
            assert back["roc"] == offline["roc"][pid]
    search = wire.from_proto(wire.to_proto("search", stored(report)["search"]))
    assert search["fpir"] is None  # the stored form names no FPIR: none travels


def test_infinite_thresholds_travel_as_infinities_and_come_back_as_null():
    tar = {"kind": "templates", "rate": "tar", "rate_exact": "1/2", "tar": 0.5, "far": 1e-4,
           "threshold": None, "genuine": 2, "impostor": 9, "genuine_accepted": 1,
           "impostors_accepted": 0, "roc": [{"far": 0.1, "tar": 1.0, "threshold": None,
                                             "exact": True}]}
    message = wire.to_proto("ijbc", tar)
    assert message.WhichOneof("result") == "templates"
    assert message.templates.threshold == float("-inf")
    assert message.templates.roc[0].threshold == float("-inf")
    assert message.templates.tar_exact == "1/2"  # made from the counts when not stored
    assert wire.from_proto(message)["threshold"] is None
    accuracy = {"kind": "pairs", "rate": "accuracy", "rate_exact": "3/4", "accuracy": 0.75,
                "accuracy_std": 0.25, "fold_accuracies": [0.5, 1.0], "thresholds": [0.3, None],
                "pairs": 4}
    message = wire.to_proto("lfw", accuracy)
    assert list(message.accuracy.thresholds) == [0.3, float("inf")]
    assert wire.from_proto(message) == accuracy
    search = {"kind": "identification", "rate": "tpir", "rate_exact": "1/2", "tpir": 0.5,
              "fnir": 0.5, "rank1": 0.5, "threshold": None, "mated": 2, "nonmated": 3,
              "hits": 1, "nonmated_accepted": 0, "fpir": 0.001}
    message = wire.to_proto("mr-1n", search)
    assert message.identification.threshold == float("-inf")
    assert message.identification.HasField("fpir")
    assert wire.from_proto(message) == search


def test_a_score_stored_before_the_kinds_reads_as_tar():
    old = {"protocol_id": "mask", "tar": 0.5, "far": 1e-4, "threshold": None, "genuine": 4,
           "impostor": 10, "genuine_accepted": 2, "impostors_accepted": 0, "tar_exact": "2/4",
           "roc": [], "rounds": 1, "candidates": 3}
    message = wire.to_proto("mask", old)
    assert (message.kind, message.rate, message.rate_exact) == ("", "tar", "2/4")
    assert message.WhichOneof("result") == "tar"
    assert message.tar.threshold == float("-inf") and message.tar.tar == 0.5
    assert wire.from_proto(message) == {
        "kind": "", "rate": "tar", "rate_exact": "2/4", "tar": 0.5, "far": 1e-4,
        "threshold": None, "genuine": 4, "impostor": 10, "genuine_accepted": 2,
        "impostors_accepted": 0, "tar_exact": "2/4", "roc": []}


@pytest.mark.parametrize("kind, rate, sent", [
    ("identification", "tpir", "tar"),      # a 1:N protocol with a TAR result
    ("pairs", "accuracy", "tar"),            # an accuracy protocol with a TAR result
    ("all", "tar", "accuracy"),              # a TAR protocol with folds
    ("templates", "tar", "tar"),             # templates ride their own member
    ("all", "tar", None),                    # no result at all
])
def test_a_result_that_is_not_the_one_its_kind_calls_for_is_refused(kind, rate, sent):
    from mfr.common.v1 import types_pb2

    message = types_pb2.ProtocolScore(protocol_id="p", kind=kind, rate=rate, rate_exact="1/2")
    if sent is not None:
        getattr(message, sent).SetInParent()
    with pytest.raises(InvalidInput) as err:
        wire.from_proto(message)
    assert err.value.code == "scores_invalid"


def test_results_join_in_the_challenge_order_and_all_are_required(report):
    scores = stored(report)
    rounds = {"all": scores["all"]}
    listed = {pid: scores[pid] for pid in ("search", "accuracy", "tar")}
    assert list(in_challenge_order(CHALLENGE, rounds, listed)) == ["all", "tar", "accuracy",
                                                                   "search"]
    with pytest.raises(RuntimeError, match="search"):
        in_challenge_order(CHALLENGE, rounds, {k: v for k, v in listed.items() if k != "search"})
    assert "listed" in STAGE_TEXT
