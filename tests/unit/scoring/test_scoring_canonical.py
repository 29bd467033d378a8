"""The canonical score and normalisation: the definition every result rests on."""

from __future__ import annotations

import numpy as np

from services.scorer.engine.canonical import (
    canonical_scores,
    fast_score_margin,
    normalise,
    tree_width,
)


def pairwise_tree(values: list[float]) -> float:
    """Independent statement of the tree: pad to a power of two, add halves."""
    width = tree_width(len(values))
    values = values + [0.0] * (width - len(values))
    while len(values) > 1:
        half = len(values) // 2
        values = [values[i] + values[i + half] for i in range(half)]
    return values[0]


def test_canonical_score_is_the_documented_pairwise_tree():
    rng = np.random.default_rng(0)
    for dim in (1, 3, 7, 64, 100, 512):
        unit = normalise(rng.standard_normal((20, dim)).astype(np.float32)).unit
        first, second = rng.integers(0, 20, 50), rng.integers(0, 20, 50)
        got = canonical_scores(unit, first, second)
        want = [pairwise_tree([float(a) * float(b) for a, b in zip(unit[i], unit[j])])
                for i, j in zip(first, second)]
        assert got.tolist() == want  # bit for bit


def test_canonical_score_does_not_depend_on_threads_or_batching():
    rng = np.random.default_rng(1)
    unit = normalise(rng.standard_normal((500, 96)).astype(np.float32)).unit
    first, second = rng.integers(0, 500, 70_000), rng.integers(0, 500, 70_000)
    one = canonical_scores(unit, first, second, threads=1)
    three = canonical_scores(unit, first, second, threads=3)
    part = canonical_scores(unit, first[123:456], second[123:456])
    assert one.tobytes() == three.tobytes()
    assert part.tobytes() == one[123:456].tobytes()


def test_normalise_flags_nan_inf_and_zero_rows_and_zeroes_them():
    features = np.ones((5, 8), dtype=np.float32)
    features[1, 3] = np.nan
    features[2, 0] = np.inf
    features[3] = 0.0
    features[4] = 1e-30  # tiny but non-zero: valid
    emb = normalise(features)
    assert emb.valid.tolist() == [True, False, False, False, True]
    assert not emb.unit[1:4].any()
    assert np.all(np.isfinite(emb.unit))
    np.testing.assert_allclose(np.linalg.norm(emb.unit[[0, 4]], axis=1), 1.0, rtol=1e-6)


def test_normalise_flushes_float32_subnormals_and_negative_zero():
    features = np.zeros((2, 4), dtype=np.float32)
    features[0] = [1.0, 1e-39, -0.0, -1e-40]
    features[1] = [-1.0, 0.0, 0.0, 0.0]
    unit = normalise(features).unit
    assert unit[0].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert not np.signbit(unit[0]).any()  # no -0.0 anywhere


def test_normalise_does_not_depend_on_threads():
    features = np.random.default_rng(2).standard_normal((40_000, 24)).astype(np.float32)
    assert normalise(features, threads=1).unit.tobytes() == normalise(features, threads=4).unit.tobytes()


def test_float32_fast_scores_stay_within_half_the_margin():
    """The margin is twice the float32 bound; even cancelling sums stay inside the bound."""
    rng = np.random.default_rng(3)
    for dim in (8, 512, 1024):
        raw = rng.standard_normal((300, dim)).astype(np.float32)
        raw[:100] = np.abs(raw[:100])  # all-positive rows: no cancellation
        raw[100:150] = raw[:50] * -1 + 1e-3 * raw[150:200]  # near-opposite pairs
        unit = normalise(raw).unit
        fast = (unit @ unit.T).astype(np.float64)
        i, j = np.triu_indices(300, 1)
        canonical = canonical_scores(unit, i, j)
        assert np.max(np.abs(fast[i, j] - canonical)) <= fast_score_margin(dim) / 2
