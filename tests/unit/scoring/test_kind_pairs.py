"""``kind = "pairs"``: TAR@FAR and k-fold accuracy over a listed pair list, exactly."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from mfr.errors import InvalidInput
from mfr.manifest import Manifest, write_manifest
from mfr.testset.protocol_files import PairList
from services.scorer.engine import ImageLabels, normalise, score
from services.scorer.engine.backends.cpu import CpuBackend
from services.scorer.engine.kinds.files import ProtocolFiles
from services.scorer.engine.kinds.pairs import score_pairs

from .listed_reference import (
    accuracy_reference,
    pair_scores,
    run_mfr_score,
    tar_reference,
    tied_features,
)
from .reference import make_challenge


def random_pairs(count: int, listed: int, seed: int, folds: int | None = None) -> PairList:
    """Random pairs, some rows duplicated; ``same`` random (it disagrees with identities)."""
    rng = np.random.default_rng(seed)
    first, second = rng.integers(0, count, listed), rng.integers(0, count, listed)
    copies = rng.choice(listed, listed // 10, replace=False)
    first[copies[1:]], second[copies[1:]] = first[copies[0]], second[copies[0]]
    same = rng.random(listed) < 0.4
    fold = None if folds is None else rng.permutation(np.arange(listed) % folds + 1)
    return PairList(first, second, same, fold)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("far", [0.01, 0.1, 0.3])
def test_tar_equals_brute_force(seed, far):
    features = tied_features(120, 6, seed)
    pairs = random_pairs(120, 900, seed)
    protocol = make_challenge([{"id": "p", "kind": "pairs", "pairs": "p.csv",
                                "far": far}]).protocols[0]
    emb = normalise(features)
    result = score_pairs(emb, pairs, protocol)
    scores = pair_scores(emb.unit, emb.valid, pairs.first, pairs.second)
    expected = tar_reference(scores.tolist(), pairs.same.tolist(), protocol.far)
    from services.scorer.engine import protocol_json
    assert protocol_json(result) == expected
    assert np.isneginf(scores).any() and len(set(scores.tolist())) < len(scores) // 4  # ties


@pytest.mark.parametrize("seed", [4, 5, 6])
@pytest.mark.parametrize("with_column", [False, True])
def test_accuracy_equals_brute_force(seed, with_column):
    features = tied_features(150, 5, seed)
    pairs = random_pairs(150, 600, seed, folds=10 if with_column else None)
    protocol = make_challenge([{"id": "lfw", "kind": "pairs", "pairs": "p.csv",
                                "metric": "accuracy"}]).protocols[0]
    emb = normalise(features)
    result = score_pairs(emb, pairs, protocol)
    scores = pair_scores(emb.unit, emb.valid, pairs.first, pairs.second)
    fold = pairs.fold if with_column else np.repeat(np.arange(1, 11), 60)
    mean, expected = accuracy_reference(scores.tolist(), pairs.same.tolist(), fold.tolist(), 10)
    doc = result.to_json()
    assert result.accuracy == mean
    assert doc["accuracy_std"] == pytest.approx(expected.pop("accuracy_std"), rel=1e-12)
    doc.pop("accuracy_std")
    assert doc == expected


def test_accuracy_thresholds_smallest_on_ties_and_inf_can_win():
    protocol = make_challenge([{"id": "a", "kind": "pairs", "pairs": "p.csv",
                                "metric": "accuracy", "folds": 2}]).protocols[0]
    features = np.array([[1, 0], [1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    emb = normalise(features)
    half = float(emb.unit[3, 0])  # canonical score of rows 0 and 3: 0.70710677...
    # Fold 1: impostors scoring 0.0 and -inf (zero row 4). Fold 2: a genuine pair at
    # `half`, an impostor pair at 1.0.
    pairs = PairList(np.array([0, 4, 0, 0]), np.array([2, 0, 3, 1]),
                     np.array([False, False, True, False]), np.array([1, 1, 2, 2]))
    result = score_pairs(emb, pairs, protocol)
    # Trained on fold 2: t = half and t = +inf both classify 1 of 2 right (1.0 only 0):
    # the smallest wins. Trained on fold 1 (impostors only): only +inf gets both right.
    assert result.thresholds == (half, np.inf)
    # Fold 1 at `half`: both impostors rejected; fold 2 at +inf: the impostor only.
    assert result.fold_accuracies == (Fraction(1), Fraction(1, 2))
    assert result.to_json()["thresholds"] == [half, None]
    assert result.accuracy == Fraction(3, 4) and result.accuracy_std == 0.25


@pytest.mark.parametrize(("listed", "fold", "message"), [
    (601, None, "601 pairs do not split into folds = 10"),
    (600, 11, "fold 11, outside 1..folds = 10"),
    (600, "gap", "fold 3 of folds = 10 has no pair"),
])
def test_fold_problems_are_challenge_invalid(listed, fold, message):
    protocol = make_challenge([{"id": "lfw", "kind": "pairs", "pairs": "p.csv",
                                "metric": "accuracy"}]).protocols[0]
    pairs = random_pairs(50, listed, 7)
    if fold is not None:
        folds = np.arange(listed) % 10 + 1
        if fold == "gap":
            folds[folds == 3] = 4
        else:
            folds[5] = fold
        pairs = PairList(pairs.first, pairs.second, pairs.same, folds)
    with pytest.raises(InvalidInput, match=message) as err:
        score_pairs(normalise(tied_features(50, 4, 7)), pairs, protocol)
    assert err.value.code == "challenge_invalid" and "'lfw'" in err.value.message


def test_a_list_without_genuine_pairs_is_unscorable():
    protocol = make_challenge([{"id": "p", "kind": "pairs", "pairs": "p.csv",
                                "far": 0.1}]).protocols[0]
    pairs = PairList(np.array([0, 1]), np.array([1, 2]), np.array([False, False]), None)
    with pytest.raises(InvalidInput, match="no genuine pair") as err:
        score_pairs(normalise(tied_features(5, 4, 1)), pairs, protocol)
    assert err.value.code == "protocol_unscorable"


def test_backend_and_threads_do_not_change_a_bit():
    features = tied_features(200, 7, 9)
    challenge = make_challenge([
        {"id": "p", "kind": "pairs", "pairs": "p.csv", "far": 0.05},
        {"id": "a", "kind": "pairs", "pairs": "p.csv", "metric": "accuracy", "folds": 5},
    ], weights={"p": 0.5, "a": 0.5})
    pairs = random_pairs(200, 1000, 9, folds=5)
    files = {"p": ProtocolFiles(pairs), "a": ProtocolFiles(pairs)}
    labels = ImageLabels(np.arange(200))
    docs = [score(features, labels, challenge, files=files, backend=b).to_json()
            for b in (CpuBackend(threads=1), CpuBackend(threads=3), "cpu")]
    assert docs[0] == docs[1] == docs[2]
    report = score(features, labels, challenge, files=files, backend="cpu")
    assert report.ranking_score == (report.results["p"].tar + report.results["a"].accuracy) / 2


def test_cli_reads_the_files_beside_the_manifest(tmp_path):
    features = tied_features(60, 5, 11)
    folder = tmp_path / "set"
    folder.mkdir()
    paths = [f"img/{i}.png" for i in range(60)]
    write_manifest(folder / "m.csv", Manifest(tuple(paths), tuple(f"id{i % 7}" for i in range(60)),
                                              tuple(frozenset() for _ in range(60))))
    pairs = random_pairs(60, 300, 11)
    (folder / "lists").mkdir()
    (folder / "lists" / "p.csv").write_text("first,second,same\n" + "".join(
        f"{paths[a]},{paths[b]},{int(s)}\n"
        for a, b, s in zip(pairs.first, pairs.second, pairs.same, strict=True)))
    np.save(tmp_path / "f.npy", features)
    (tmp_path / "c.toml").write_text(
        'id = "t"\n[ranking]\nweights = { acc = 1 }\n'
        '[[protocols]]\nid = "tar"\nkind = "pairs"\npairs = "lists/p.csv"\nfar = 0.1\n'
        '[[protocols]]\nid = "acc"\nkind = "pairs"\npairs = "lists/p.csv"\n'
        'metric = "accuracy"\n')
    result = run_mfr_score(tmp_path / "c.toml", folder / "m.csv", tmp_path / "f.npy", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    emb = normalise(features)
    scores = pair_scores(emb.unit, emb.valid, pairs.first, pairs.second).tolist()
    far = Fraction(1, 10)
    assert doc["protocols"]["tar"] == tar_reference(scores, pairs.same.tolist(), far)
    mean, expected = accuracy_reference(scores, pairs.same.tolist(),
                                        np.repeat(np.arange(1, 11), 30).tolist(), 10)
    assert doc["protocols"]["acc"]["fold_accuracies"] == expected["fold_accuracies"]
    assert doc["ranking_score"] == float(mean)
    table = run_mfr_score(tmp_path / "c.toml", folder / "m.csv", tmp_path / "f.npy")
    assert table.exit_code == 0 and "acc" in table.output and "accuracy" in table.output
