"""The engine against brute force (DESIGN.md section 3), on data made to break it."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest

from mfr.errors import InvalidInput
from services.scorer.engine import ImageLabels, make_plan, normalise, run_rounds, score
from services.scorer.engine.backends.cpu import CpuBackend
from services.scorer.engine.floors import FloorSettings

from .reference import MR_PROTOCOLS, brute_force, make_challenge, mr_like

# Small floors settings so that small test sets take the sampled-floor path
# (the default would keep every pair of sets this small).
SAMPLED = FloorSettings(expected_min=8, sample_min=2_000, sample_hits=8)


def engine_json(features, labels, challenge, **kwargs):
    kwargs.setdefault("tile_size", 128)
    kwargs.setdefault("floor_settings", SAMPLED)
    return score(features, labels, challenge, backend="cpu", **kwargs).to_json()


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force_on_random_data_with_races_and_cross(seed):
    features, labels = mr_like(900, 24, seed)
    features[[3, 50, 400]] = np.nan  # invalid rows: -inf, still counted
    features[[7, 8]] = 0.0
    challenge = make_challenge(MR_PROTOCOLS, {"mask": 0.25, "mr-all": 0.75})
    assert engine_json(features, labels, challenge) == brute_force(features, labels, challenge)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_matches_brute_force_when_scores_tie_exactly(seed):
    """Sparse embeddings: a handful of score values, ties at every threshold (strict >)."""
    features, labels = mr_like(700, 32, seed, sparse=True)
    challenge = make_challenge(MR_PROTOCOLS)
    got = engine_json(features, labels, challenge)
    want = brute_force(features, labels, challenge)
    assert got == want
    # The data does tie at the threshold: fewer than k impostors lie strictly above it.
    for pid, result in want["protocols"].items():
        far = next(Fraction(str(p["far"])) for p in MR_PROTOCOLS if p["id"] == pid)
        assert result["impostors_accepted"] < int(far * result["impostor"])
        assert 0 < result["threshold"] < 1


def test_default_settings_keep_every_pair_of_small_sets_and_agree():
    features, labels = mr_like(600, 20, 5)
    challenge = make_challenge(MR_PROTOCOLS)
    got = score(features, labels, challenge, backend="cpu").to_json()
    assert got == brute_force(features, labels, challenge)


def test_far_so_small_that_k_is_zero_takes_the_largest_impostor():
    features, labels = mr_like(400, 16, 6)
    challenge = make_challenge([{"id": "all", "kind": "all", "tag": "mr", "far": 1e-9}])
    got = engine_json(features, labels, challenge)
    assert got == brute_force(features, labels, challenge)
    assert got["protocols"]["all"]["impostors_accepted"] == 0


def test_threshold_is_minus_infinity_when_most_embeddings_are_invalid():
    features, labels = mr_like(300, 16, 7)
    features[30:] = np.nan
    challenge = make_challenge([{"id": "all", "kind": "all", "tag": "mr", "far": 0.5}])
    got = engine_json(features, labels, challenge)
    assert got == brute_force(features, labels, challenge)
    assert got["protocols"]["all"]["threshold"] is None  # -inf: JSON null


def test_identities_with_one_image_count_only_as_impostors():
    rng = np.random.default_rng(8)
    identity = np.concatenate([np.arange(200), np.repeat(np.arange(200, 230), 4)])
    labels = ImageLabels(identity.astype(np.int64), {"mr": np.ones(identity.size, bool)})
    features = rng.standard_normal((identity.size, 12)).astype(np.float32)
    challenge = make_challenge([{"id": "all", "kind": "all", "tag": "mr", "far": 1e-3}])
    got = engine_json(features, labels, challenge)
    assert got == brute_force(features, labels, challenge)
    assert got["protocols"]["all"]["genuine"] == 30 * 6


@pytest.mark.parametrize("floor", ["too-high", "at-the-threshold"])
def test_a_floor_not_proven_low_enough_is_lowered_until_it_is(floor):
    """Too few candidates, or a (k+1)-th largest within the margin of the floor
    (ties sitting on it): both must trigger another round, never a wrong answer."""
    features, labels = mr_like(800, 32, 9, sparse=floor == "at-the-threshold")
    challenge = make_challenge(MR_PROTOCOLS)
    want = brute_force(features, labels, challenge)["protocols"]
    emb = normalise(features)
    backend = CpuBackend()
    plan = make_plan(emb, labels, challenge.protocols, backend, tile_size=100,
                     floor_settings=SAMPLED)
    floors = {pid: 0.99 if floor == "too-high" else float(np.float32(want[pid]["threshold"]))
              for pid in plan.protocols}
    plan = replace(plan, protocols={pid: replace(p, floor=floors[pid])
                                    for pid, p in plan.protocols.items()})
    results, rounds, _ = run_rounds(plan, emb, backend)
    assert rounds >= 2
    assert all(r.rounds >= 2 for r in results.values())
    for pid, result in results.items():
        assert result.threshold == want[pid]["threshold"]
        assert result.impostors_accepted == want[pid]["impostors_accepted"]
        assert result.genuine_accepted == want[pid]["genuine_accepted"]


def test_a_cross_protocol_counts_images_with_both_tags_once_per_role():
    features, labels = mr_like(500, 16, 10)
    assert (labels.tags["mask"] & labels.tags["nonmask"]).any()
    challenge = make_challenge([MR_PROTOCOLS[-1]])
    got = engine_json(features, labels, challenge)
    assert got == brute_force(features, labels, challenge)
    probe, gallery = labels.tags["mask"], labels.tags["nonmask"]
    pairs = int(probe.sum()) * int(gallery.sum()) - int((probe & gallery).sum())
    result = got["protocols"]["mask"]
    assert result["genuine"] + result["impostor"] == pairs


def test_roc_points_are_exact_at_the_target_and_where_candidates_prove_them():
    features, labels = mr_like(900, 24, 11)
    challenge = make_challenge([{"id": "all", "kind": "all", "tag": "mr", "far": 1e-4}])
    report = score(features, labels, challenge, backend="cpu", tile_size=128,
                   floor_settings=SAMPLED)
    roc = report.results["all"].roc
    assert [p.far for p in roc] == [Fraction(1, 10 ** e) for e in range(1, 5)]
    assert roc[-1].exact and roc[-1].tar == report.results["all"].tar
    assert not roc[0].exact  # FAR 0.1 lies far outside the candidates: a sample estimate
    # Keeping every pair makes every point exact, and equal to a brute-force sort.
    every_pair = FloorSettings(expected_min=10**12)
    full = score(features, labels, challenge, backend="cpu",
                 floor_settings=every_pair).results["all"].roc
    assert all(p.exact for p in full)
    for point in full:
        level = make_challenge([{"id": "all", "kind": "all", "tag": "mr",
                                 "far": float(point.far)}])
        want = brute_force(features, labels, level)["protocols"]["all"]
        assert float(point.tar) == want["tar"]
    tars = [float(p.tar) for p in roc]
    assert tars == sorted(tars, reverse=True)


def test_a_protocol_without_genuine_pairs_is_a_clear_error():
    features = np.random.default_rng(12).standard_normal((50, 8)).astype(np.float32)
    labels = ImageLabels(np.arange(50, dtype=np.int64), {"mr": np.ones(50, bool)})
    challenge = make_challenge([{"id": "all", "kind": "all", "tag": "mr", "far": 1e-3}])
    with pytest.raises(InvalidInput, match="no genuine pair") as error:
        score(features, labels, challenge, backend="cpu")
    assert error.value.code == "protocol_unscorable"


def test_a_protocol_without_impostor_pairs_is_a_clear_error():
    features = np.random.default_rng(13).standard_normal((50, 8)).astype(np.float32)
    labels = ImageLabels(np.zeros(50, dtype=np.int64), {"mr": np.ones(50, bool)})
    challenge = make_challenge([{"id": "all", "kind": "all", "tag": "mr", "far": 1e-3}])
    with pytest.raises(InvalidInput, match="no impostor pair"):
        score(features, labels, challenge, backend="cpu")


def test_a_protocol_whose_tag_is_absent_is_a_clear_error():
    features, labels = mr_like(60, 8, 14)
    challenge = make_challenge([{"id": "kids", "kind": "all", "tag": "children", "far": 1e-3}])
    with pytest.raises(InvalidInput, match="no image is tagged 'children'"):
        score(features, labels, challenge, backend="cpu")


@pytest.mark.parametrize("bad, message", [
    (np.zeros((10, 4), dtype=np.float64), "float32"),
    (np.zeros((9, 4), dtype=np.float32), "9 rows but the manifest has 10"),
    (np.zeros(10, dtype=np.float32), "2-D"),
])
def test_features_that_do_not_fit_the_manifest_are_refused(bad, message):
    labels = ImageLabels(np.arange(10, dtype=np.int64) % 3, {"mr": np.ones(10, bool)})
    challenge = make_challenge([{"id": "all", "kind": "all", "tag": "mr", "far": 1e-3}])
    with pytest.raises(InvalidInput, match=message) as error:
        score(bad, labels, challenge, backend="cpu")
    assert error.value.code == "features_invalid"


def test_labels_compare_identities_as_given_strings():
    labels = ImageLabels(np.array(["00017", "17", "00017", "017"]), {"mr": np.ones(4, bool)})
    assert labels.identity.tolist() == [0, 2, 0, 1]
    with pytest.raises(InvalidInput):
        ImageLabels(np.arange(4), {"mr": np.ones(3, bool)})
