"""Adversarial checks of the scoring path (review): edge sizes, tile and genuine-range
boundaries, invalid rows, ties, index arithmetic past 2**31, partial handling."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from mfr.errors import Conflict
from services.scorer.engine import ImageLabels, make_plan, merge, run_rounds, score, score_tile
from services.scorer.engine import plan as plan_module
from services.scorer.engine.backends import candidate_filter, proof_filter
from services.scorer.engine.backends.cpu import CpuBackend
from services.scorer.engine.canonical import canonical_scores, normalise
from services.scorer.engine.floors import FloorSettings
from services.scorer.engine.genuine import genuine_layout, genuine_pairs
from services.scorer.engine.plan import ScoringPlan
from services.scorer.engine.tiles import GENUINE, IMPOSTOR, Tile, TilePartial
from services.scorer.engine.universes import Universe, count_pairs

from .reference import MR_PROTOCOLS, brute_force, make_challenge, mr_like

SAMPLED = FloorSettings(expected_min=8, sample_min=2_000, sample_hits=8)
EVERY = FloorSettings(expected_min=10**12)
ALL = [{"id": "all", "kind": "all", "tag": "mr", "far": 1e-2}]


def engine(features, labels, challenge, **kwargs):
    kwargs.setdefault("tile_size", 64)
    kwargs.setdefault("floor_settings", SAMPLED)
    return score(features, labels, challenge, backend="cpu", **kwargs).to_json()


def labels_all(identity, extra=None):
    identity = np.asarray(identity, dtype=np.int64)
    tags = {"mr": np.ones(identity.size, bool)}
    tags.update(extra or {})
    return ImageLabels(identity, tags)


@pytest.mark.parametrize("n", [63, 64, 65, 128, 129, 192])
@pytest.mark.parametrize("settings", [SAMPLED, EVERY])
def test_tile_boundaries_at_and_around_multiples_of_the_tile_size(n, settings):
    features, labels = mr_like(n, 6, n, identities=max(2, n // 3))
    challenge = make_challenge(MR_PROTOCOLS)
    try:
        want = brute_force(features, labels, challenge)
    except IndexError:  # a protocol too small to have an impostor at the rank
        pytest.skip("degenerate draw")
    assert engine(features, labels, challenge, tile_size=64, floor_settings=settings) == want


def test_three_images_the_smallest_scorable_all_protocol():
    features = np.array([[1, 0], [1, 0.1], [0, 1]], dtype=np.float32)
    labels = labels_all([0, 0, 1])
    for far in (1e-6, 0.4, 0.5, 0.9):
        challenge = make_challenge([{"id": "all", "kind": "all", "tag": "mr", "far": far}])
        got = engine(features, labels, challenge, tile_size=2)
        assert got == brute_force(features, labels, challenge)
        assert got["protocols"]["all"]["genuine"] == 1
        assert got["protocols"]["all"]["impostor"] == 2


@pytest.mark.parametrize("far", [0.9, 0.95, 0.99])
def test_k_plus_one_equal_to_the_impostor_count_takes_the_smallest(far):
    """N_imp = 18: far 0.95 and 0.99 give k = 17 (k + 1 = N_imp), the smallest impostor."""
    rng = np.random.default_rng(1)
    identity = np.array([0, 0, 1, 1, 2, 2, 3])  # 21 pairs, 3 genuine, 18 impostor
    features = rng.standard_normal((identity.size, 4)).astype(np.float32)
    labels = labels_all(identity)
    challenge = make_challenge([{"id": "all", "kind": "all", "tag": "mr", "far": far}])
    got = engine(features, labels, challenge, tile_size=3)
    assert got == brute_force(features, labels, challenge)
    assert got["protocols"]["all"]["impostor"] == 18


def test_every_impostor_touches_an_invalid_row():
    identity = np.array([0, 0, 0, 1, 2])
    features = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    features[3] = np.inf
    features[4] = 0.0
    labels = labels_all(identity)
    for far in (1e-6, 0.5):
        challenge = make_challenge([{"id": "all", "kind": "all", "tag": "mr", "far": far}])
        got = engine(features, labels, challenge, tile_size=2)
        assert got == brute_force(features, labels, challenge)
        result = got["protocols"]["all"]
        assert result["threshold"] is None and result["impostors_accepted"] == 0
        assert result["genuine_accepted"] == 3  # finite genuine scores beat -inf


def test_all_genuine_pairs_invalid_gives_zero_tar():
    identity = np.array([0, 0, 1, 2, 3, 4])
    features = np.random.default_rng(3).standard_normal((6, 4)).astype(np.float32)
    features[0, 1] = np.nan
    labels = labels_all(identity)
    challenge = make_challenge(ALL)
    got = engine(features, labels, challenge, tile_size=2)
    assert got == brute_force(features, labels, challenge)
    assert got["protocols"]["all"]["tar"] == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_ties_everywhere_with_small_tiles_and_retries(seed):
    """Sparse embeddings: scores tie exactly; tiles of 32 and a floor forced high."""
    features, labels = mr_like(300, 8, 100 + seed, sparse=True)
    features[[1, 2]] = np.nan
    challenge = make_challenge(MR_PROTOCOLS)
    want = brute_force(features, labels, challenge)
    assert engine(features, labels, challenge, tile_size=32) == want
    emb = normalise(features)
    backend = CpuBackend()
    plan = make_plan(emb, labels, challenge.protocols, backend, tile_size=32,
                     floor_settings=SAMPLED)
    plan = replace(plan, protocols={pid: replace(p, floor=0.999) for pid, p in
                                    plan.protocols.items()})
    results, rounds, _ = run_rounds(plan, emb, backend)
    assert rounds >= 2
    for pid, result in results.items():
        w = want["protocols"][pid]
        assert (result.threshold if result.threshold != -np.inf else None) == w["threshold"]
        assert result.impostors_accepted == w["impostors_accepted"]
        assert result.genuine_accepted == w["genuine_accepted"]


def _outcomes(plan, emb, backend):
    results, rounds, _ = run_rounds(plan, emb, backend)
    return rounds, {pid: (r.threshold, r.tar, r.impostors_accepted, r.roc, r.candidates,
                          r.rounds) for pid, r in results.items()}


@pytest.mark.parametrize("seed", range(3))
def test_a_backend_handing_on_extra_candidates_changes_nothing(monkeypatch, seed):
    """A backend keeping more than the proof needs (the torch backend; any fast path with
    a wider margin) gets the same thresholds, ROC points, candidate counts and rounds:
    merge looks only at canonical >= floor + margin. Ties and floors forced onto and
    between the tied levels, so retries happen and extra pairs sit at every floor."""
    from services.scorer.engine.backends import cpu as cpu_module

    features, labels = mr_like(300, 8, 200 + seed, sparse=True)
    challenge = make_challenge(MR_PROTOCOLS)
    emb = normalise(features)
    base = make_plan(emb, labels, challenge.protocols, CpuBackend(), tile_size=32,
                     floor_settings=SAMPLED)
    levels = np.unique(np.round(canonical_scores(emb.unit, np.arange(0, 300, 2),
                                                 np.arange(1, 300, 2)), 6))
    for floor in [0.999, *levels[-4:], *(levels[-4:] - 1e-6)]:
        plan = replace(base, protocols={pid: replace(p, floor=float(np.float32(floor)))
                                        for pid, p in base.protocols.items()})
        want = _outcomes(plan, emb, CpuBackend())
        with monkeypatch.context() as patched:
            patched.setattr(cpu_module, "proof_filter",
                            lambda bits, scores, job, margin: np.ones(scores.shape, bool))
            got = _outcomes(plan, emb, CpuBackend())
        assert got == want, floor


def test_cross_protocol_where_every_image_has_both_tags_and_same_tags():
    """probe == gallery: every ordered pair of two different images, both orders."""
    features, labels = mr_like(120, 6, 7)
    both = np.ones(labels.count, bool)
    labels = ImageLabels(labels.identity, {"p": both, "g": both, "mr": both})
    challenge = make_challenge([
        {"id": "x", "kind": "cross", "probe": "p", "gallery": "g", "far": 1e-2},
        {"id": "y", "kind": "cross", "probe": "p", "gallery": "p", "far": 1e-3},
        {"id": "all", "kind": "all", "tag": "mr", "far": 1e-2},
    ])
    got = engine(features, labels, challenge, tile_size=32)
    assert got == brute_force(features, labels, challenge)
    n = labels.count
    x = got["protocols"]["x"]
    assert x["genuine"] + x["impostor"] == n * (n - 1)
    assert x["impostor"] == 2 * got["protocols"]["all"]["impostor"]


def test_identity_of_one_image_and_images_in_no_protocol():
    features, labels = mr_like(200, 6, 8, identities=150)
    challenge = make_challenge(MR_PROTOCOLS)
    assert engine(features, labels, challenge, tile_size=16) == brute_force(
        features, labels, challenge)


@pytest.mark.parametrize("per_tile", [1, 2, 3, 7, 64])
def test_genuine_ranges_at_every_boundary(monkeypatch, per_tile):
    monkeypatch.setattr(plan_module, "GENUINE_TILE_PAIRS", per_tile)
    features, labels = mr_like(150, 6, 9, identities=20)
    challenge = make_challenge(MR_PROTOCOLS)
    got = engine(features, labels, challenge, tile_size=40)
    assert got == brute_force(features, labels, challenge)


def _one_identity_universe(n, symmetric):
    positions = np.arange(n, dtype=np.int64)
    bits = np.ones(n, dtype=np.int64)
    return Universe(0, "all" if symmetric else "cross", ("p",), positions, positions, bits,
                    bits if symmetric else bits.copy())


def test_genuine_ordinals_past_two_to_the_31():
    """One identity of 70,000 images: 2.4e9 genuine pairs, ordinals past int32."""
    n = 70_000
    identity = np.zeros(n, dtype=np.int64)
    universe = _one_identity_universe(n, True)
    layout = genuine_layout(universe, identity)
    assert layout.total == n * (n - 1) // 2 > 2**31
    start = 2**31 + 12345
    rows, cols = genuine_pairs(universe, layout, start, start + 100)
    # Element s (sorted = position here) owns ordinals from s*n - s*(s+1)/2, partners s+1..n-1.
    want = []
    for ordinal in range(start, start + 100):
        s = 0
        lo, hi = 0, n - 1
        while lo < hi:  # largest s with first(s) <= ordinal
            mid = (lo + hi + 1) // 2
            if mid * n - mid * (mid + 1) // 2 <= ordinal:
                lo = mid
            else:
                hi = mid - 1
        s = lo
        want.append((s, s + 1 + ordinal - (s * n - s * (s + 1) // 2)))
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == want
    counts = count_pairs(make_challenge([{"id": "p", "kind": "all", "tag": "t",
                                          "far": 1e-6}]).protocols[0],
                         ImageLabels(identity, {"t": np.ones(n, bool)}), np.ones(n, bool))
    assert counts.genuine == n * (n - 1) // 2 and counts.impostor == 0

    cross = _one_identity_universe(n, False)
    layout = genuine_layout(cross, identity)
    assert layout.total == n * n
    rows, cols = genuine_pairs(cross, layout, 2**32 - 5, 2**32 + 5)
    ordinals = np.arange(2**32 - 5, 2**32 + 5)
    r, c = ordinals // n, ordinals % n
    keep = r != c
    assert rows.tolist() == r[keep].tolist() and cols.tolist() == c[keep].tolist()


def test_a_tile_at_positions_past_46341_finds_the_brute_force_candidates():
    """N = 46,400: N**2 > 2**31. The last tiles' candidates equal a brute-force scan."""
    n = 46_400
    rng = np.random.default_rng(10)
    features = rng.standard_normal((n, 3)).astype(np.float32)
    identity = rng.integers(0, 10_000, n)
    labels = labels_all(identity)
    emb = normalise(features)
    challenge = make_challenge([{"id": "all", "kind": "all", "tag": "mr", "far": 1e-6}])
    plan = make_plan(emb, labels, challenge.protocols, CpuBackend(), tile_size=4096,
                     floor_settings=FloorSettings(expected_min=8, sample_min=2_000,
                                                  sample_hits=8))
    assert plan.count ** 2 > 2**31
    blocks = -(-n // 4096)
    backend = CpuBackend()
    for a, b in [(blocks - 1, blocks - 1), (blocks - 2, blocks - 1), (0, blocks - 1)]:
        tile = Tile(0, IMPOSTOR, a, b)
        partial = score_tile(plan, emb, tile, backend)
        job = plan.impostor_job(tile)
        (r0, r1), (c0, c1) = job.row_span, job.col_span
        scores = emb.unit[r0:r1] @ emb.unit[c0:c1].T
        r, c = np.nonzero(scores >= job.floor_min)
        r, c = r + r0, c + c0
        keep, bits = candidate_filter(r, c, scores[r - r0, c - c0], job)
        # Handed on: the candidates merge's proof uses (canonical >= floor + margin).
        r, c, bits = r[keep], c[keep], bits[keep]
        keep = proof_filter(bits, canonical_scores(emb.unit, r, c), job, plan.margin)
        got = sorted(zip(partial.first.tolist(), partial.second.tolist(), strict=True))
        assert got == sorted(zip(r[keep].tolist(), c[keep].tolist(), strict=True))
        assert partial.first.dtype == np.int64 and (partial.first < partial.second).all()
        assert np.array_equal(partial.score, canonical_scores(emb.unit, partial.first,
                                                              partial.second))
        back = TilePartial.from_bytes(partial.to_bytes())
        assert np.array_equal(back.first, partial.first)
        assert np.array_equal(back.second, partial.second)


def _mr_plan(count: int, seed: int):
    """(features, normalised, backend, plan) of a small MR-like set cut into 64-wide tiles."""
    features, labels = mr_like(count, 8, seed)
    emb, backend = normalise(features), CpuBackend()
    plan = make_plan(emb, labels, make_challenge(MR_PROTOCOLS).protocols, backend, tile_size=64,
                     floor_settings=SAMPLED)
    return features, emb, backend, plan


def test_merge_twice_is_the_same_and_refuses_extra_and_duplicate_partials():
    features, emb, backend, plan = _mr_plan(200, 11)
    partials = [score_tile(plan, emb, t, backend) for t in plan.tiles]
    first = merge(plan, partials)
    again = merge(plan, list(reversed(partials)))
    assert first.results == again.results
    # A tile scored twice (another worker) gives an equivalent partial: same result.
    redone = [score_tile(ScoringPlan.from_bytes(plan.to_bytes()), normalise(features), t,
                         CpuBackend()) for t in plan.tiles]
    assert merge(plan, redone).results == first.results
    with pytest.raises(Conflict) as error:
        merge(plan, partials + partials[:1])
    assert error.value.code == "partial_duplicate"
    extra = replace(partials[0], tile=Tile(0, GENUINE, 10**9, 10**9 + 1))
    with pytest.raises(Conflict) as error:
        merge(plan, partials[1:] + [extra])
    assert error.value.code == "partials_incomplete"
    with pytest.raises(Conflict) as error:
        merge(plan, partials + [extra])
    assert error.value.code == "partials_incomplete"
    assert "not in the plan" in error.value.message


def test_retry_plan_round_trips_with_the_same_digest():
    _, emb, backend, plan = _mr_plan(300, 12)
    plan = replace(plan, protocols={pid: replace(p, floor=0.999) for pid, p in
                                    plan.protocols.items()})
    outcome = merge(plan, [score_tile(plan, emb, t, backend) for t in plan.tiles])
    assert outcome.retry is not None
    retry = outcome.retry
    back = ScoringPlan.from_bytes(retry.to_bytes())
    assert back.digest == retry.digest
    assert back.tiles == retry.tiles
    assert math.isfinite(retry.margin)


@pytest.mark.parametrize("seed", range(12))
def test_random_protocol_mixes_tiny_tiles_and_floors_match_brute_force(seed):
    """Random sizes, dims, tags (nested, overlapping, probe == gallery), invalid rows,
    integer-valued features (exact ties), FAR up to 0.999 and tiles down to one row."""
    rng = np.random.default_rng(1000 + seed)
    n, dim = int(rng.integers(3, 120)), int(rng.integers(1, 9))
    identity = rng.integers(0, int(rng.integers(2, n + 1)), n)
    if seed % 2:
        features = rng.integers(-1, 2, (n, dim)).astype(np.float32)
    else:
        features = rng.standard_normal((n, dim)).astype(np.float32)
    features[rng.random(n) < rng.choice([0.0, 0.1, 0.6])] = rng.choice([np.nan, np.inf, 0.0])
    tags = {t: rng.random(n) < rng.uniform(0.3, 1) for t in "abc"}
    tags["d"] = tags["a"] & (rng.random(n) < 0.5)
    labels = ImageLabels(identity, tags)
    protocols = []
    for i in range(4):
        far = float(rng.choice([1e-6, 1e-2, 0.3, 0.5, 0.999]))
        pick = [str(t) for t in rng.choice(list("abcd"), 2)]
        protocols.append({"id": f"p{i}", "kind": "all", "tag": pick[0], "far": far} if i % 2
                         else {"id": f"p{i}", "kind": "cross", "probe": pick[0],
                               "gallery": pick[1], "far": far})
    challenge = make_challenge(protocols)
    try:
        want = brute_force(features, labels, challenge)
    except (IndexError, ZeroDivisionError):
        pytest.skip("a protocol without genuine or impostor pairs")
    settings = FloorSettings(expected_min=1, sample_min=10, sample_hits=1, expected_factor=1)
    for tile_size in (1, 5, 64):
        assert engine(features, labels, challenge, tile_size=tile_size,
                      floor_settings=settings) == want
