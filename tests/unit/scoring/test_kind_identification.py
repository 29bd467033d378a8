"""The identification kind (1:N, DESIGN.md 3.1) against a brute-force reference.

The reference shares only the canonical score's definition with the engine: it
scores every (probe, gallery image) pair canonically, takes per-identity maxima
and applies the rules with plain Python loops and a sort. Data is built to
catch wrong implementations: contested mates, exact ties (a mate identity
duplicated under another identity), NaN and zero rows on both sides, an
identity with many images (crowding the top-k), and gallery scores packed far
tighter than float32 resolution (the fast path alone would pick wrong).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from mfr.errors import InvalidInput
from mfr.protocols import Protocol
from services.scorer.engine.canonical import canonical_scores, fast_score_margin, normalise
from services.scorer.engine.kinds import identification_search
from services.scorer.engine.kinds.identification import score_identification
from services.scorer.engine.kinds.identification_search import faiss_gpus
from services.scorer.engine.universes import ImageLabels

pytest.importorskip("faiss")


def reference(features, identity, probe_mask, gallery_mask, fpir) -> dict:
    emb = normalise(features)
    probes, gallery = np.flatnonzero(probe_mask), np.flatnonzero(gallery_mask)
    first, second = np.repeat(probes, gallery.size), np.tile(gallery, probes.size)
    scores = canonical_scores(emb.unit, first, second).reshape(probes.size, gallery.size)
    scores[~emb.valid[probes], :] = -np.inf
    scores[:, ~emb.valid[gallery]] = -np.inf
    per_identity = {}
    for column, image in enumerate(gallery):
        own = identity[image]
        column_scores = scores[:, column]
        per_identity[own] = np.maximum(per_identity.get(own, column_scores), column_scores)
    nonmated, mated = [], []  # best score; (mate score, best non-mate score)
    for row, image in enumerate(probes):
        own = identity[image]
        others = [float(s[row]) for i, s in per_identity.items() if i != own]
        best_other = max(others, default=-math.inf)
        if own in per_identity:
            mated.append((float(per_identity[own][row]), best_other))
        else:
            nonmated.append(best_other)
    k = math.floor(fpir * len(nonmated))
    threshold = sorted(nonmated, reverse=True)[k] if k < len(nonmated) else -math.inf
    rank1 = sum(mate > other for mate, other in mated)
    hits = sum(mate > other and mate > threshold for mate, other in mated)
    return {"tpir": Fraction(hits, len(mated)), "rank1": Fraction(rank1, len(mated)),
            "threshold": threshold, "mated": len(mated), "nonmated": len(nonmated),
            "hits": hits, "nonmated_accepted": sum(s > threshold for s in nonmated),
            "ties": sum(mate == other > -math.inf for mate, other in mated),
            "rank1_at_threshold": sum(mate == threshold > other for mate, other in mated)}


def protocol(fpir) -> Protocol:
    return Protocol(id="1n", kind="identification", probe="search", gallery="enrolled",
                    fpir=Fraction(fpir))


def engine(features, identity, probe_mask, gallery_mask, fpir, device="cpu"):
    labels = ImageLabels(identity, {"search": probe_mask, "enrolled": gallery_mask})
    return score_identification(normalise(features), labels, protocol(fpir), device=device)


def assert_equal(result, expected) -> None:
    got = {"tpir": result.tpir, "rank1": result.rank1, "threshold": result.threshold,
           "mated": result.mated, "nonmated": result.nonmated, "hits": result.hits,
           "nonmated_accepted": result.nonmated_accepted}
    want = {key: expected[key] for key in got}
    assert got == want
    # bitwise, not just ==
    assert np.float64(result.threshold).tobytes() == np.float64(expected["threshold"]).tobytes()
    assert result.rate == result.tpir and result.fnir == 1 - result.tpir


def contested(seed: int, dim: int = 32, identities: int = 80, noise: float = 1.0):
    """Identities with 0-4 gallery and 0-3 probe images around a centre, plus a
    gallery identity duplicating another's images (exact mate ties), a non-mated
    probe duplicating a mated one (a mate score equal to the threshold), a large
    identity (40 gallery images) and NaN / zero / Inf rows on both sides."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((identities, dim))
    rows, ids, is_probe = [], [], []
    for person in range(identities):
        n_gallery = 40 if person == 0 else int(rng.integers(0, 5))
        for probe_flag, count in ((False, n_gallery), (True, int(rng.integers(0, 4)))):
            for _ in range(count):
                rows.append(centres[person] + noise * rng.standard_normal(dim))
                ids.append(person)
                is_probe.append(probe_flag)
    rows, ids, is_probe = np.array(rows), np.array(ids), np.array(is_probe)
    # identity 1000 is a copy of a mated identity's gallery: its probes tie -> miss
    mated_ids = sorted(set(ids[is_probe]) & set(ids[~is_probe]) - {0})
    twin = mated_ids[0]
    # its probes close to its first gallery image, so nothing but the copy can tie them
    twin_probes = (ids == twin) & is_probe
    rows[twin_probes] = (rows[(ids == twin) & ~is_probe][0]
                         + 0.05 * rng.standard_normal((twin_probes.sum(), dim)))
    copies = rows[(ids == twin) & ~is_probe]
    rows = np.vstack([rows, copies])
    ids = np.concatenate([ids, np.full(len(copies), 1000)])
    is_probe = np.concatenate([is_probe, np.zeros(len(copies), dtype=bool)])
    # a non-mated probe (identity 2000) equal to a strong mated probe: the threshold at
    # k = 0 is that probe's mate score exactly, and strict "> t" makes it a miss
    strong = mated_ids[1]
    first_probe = np.flatnonzero((ids == strong) & is_probe)[0]
    rows[first_probe] = (rows[(ids == strong) & ~is_probe][0]
                         + 0.01 * rng.standard_normal(dim))
    rows = np.vstack([rows, rows[first_probe]])
    ids = np.append(ids, 2000)
    is_probe = np.append(is_probe, True)
    features = rows.astype(np.float32)
    # invalid rows elsewhere: the ties above stay ties
    others = ~np.isin(ids, [twin, 1000, strong, 2000])
    for side in (np.flatnonzero(is_probe & others), np.flatnonzero(~is_probe & others)):
        picks = rng.choice(side, 4, replace=False)
        features[picks[0], 3] = np.nan
        features[picks[1]] = 0.0
        features[picks[2], 0] = np.inf
    return features, ids, is_probe, ~is_probe


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fpir", ["1/1000", "1/10", "1/2", "99/100"])
def test_equals_brute_force_on_contested_data(seed, fpir):
    features, ids, probe, gallery = contested(seed)
    expected = reference(features, ids, probe, gallery, Fraction(fpir))
    assert expected["ties"] > 0  # the twin identity makes mate == best non-mate
    if fpir == "1/1000":  # k = 0: the duplicated probe sets t to a mate score
        assert expected["rank1_at_threshold"] > 0
    else:
        assert 0 < expected["hits"] < expected["mated"]
    assert_equal(engine(features, ids, probe, gallery, fpir), expected)


def test_fpir_edges_and_invalid_nonmated_probes():
    features, ids, probe, gallery = contested(3)
    # fpir = 1: k = N_nonmated, threshold -inf; a NaN non-mated probe has best -inf
    for fpir in (Fraction(1), Fraction(1, 10**9), Fraction(999999, 10**6)):
        expected = reference(features, ids, probe, gallery, fpir)
        assert_equal(engine(features, ids, probe, gallery, fpir), expected)
    assert engine(features, ids, probe, gallery, 1).threshold == -math.inf


def test_no_nonmated_probe_gives_minus_inf_threshold():
    features, ids, probe, gallery = contested(4)
    probe &= np.isin(ids, ids[gallery])
    expected = reference(features, ids, probe, gallery, Fraction(1, 100))
    assert expected["nonmated"] == 0 and expected["threshold"] == -math.inf
    assert_equal(engine(features, ids, probe, gallery, "1/100"), expected)


def packed(seed: int, dim: int = 64, gallery_size: int = 600):
    """Gallery images of different identities within ~1e-4 of one direction: their
    scores against a probe near it differ by far less than the float32 margin, so
    only canonical re-scoring orders them. A spread-out remainder keeps the
    search's k small at first (growth has to happen)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(dim)
    tight = base + 1e-4 * rng.standard_normal((gallery_size // 3, dim))
    spread = rng.standard_normal((gallery_size - len(tight), dim))
    probes = base + 1e-4 * rng.standard_normal((60, dim))
    features = np.vstack([tight, spread, probes]).astype(np.float32)
    ids = np.concatenate([np.arange(gallery_size) // 2, rng.integers(0, 400, 60)])
    gallery = np.arange(len(features)) < gallery_size
    return features, ids, ~gallery, gallery


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_brute_force_when_scores_are_packed_below_float32_resolution(seed):
    features, ids, probe, gallery = packed(seed)
    emb = normalise(features)
    fast = emb.unit[probe] @ emb.unit[gallery].T
    exact = canonical_scores(emb.unit, np.repeat(np.flatnonzero(probe), gallery.sum()),
                             np.tile(np.flatnonzero(gallery), probe.sum())).reshape(fast.shape)
    # the data defeats float32: its argmax disagrees with the canonical one somewhere
    assert (fast.argmax(axis=1) != exact.argmax(axis=1)).any()
    for fpir in ("1/20", "1/2"):
        expected = reference(features, ids, probe, gallery, Fraction(fpir))
        assert 0 < expected["hits"] or expected["rank1"] > 0 or expected["nonmated"] > 0
        assert_equal(engine(features, ids, probe, gallery, fpir), expected)


def test_exhaustive_fallback_beyond_the_index_k_limit(monkeypatch):
    """The path a GPU index takes for k > 2048, forced here with a limit of 8."""

    class Limited(identification_search.GalleryIndex):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.max_k = 8

    monkeypatch.setattr(identification_search, "GalleryIndex", Limited)
    for features, ids, probe, gallery in (packed(2), contested(5)):
        expected = reference(features, ids, probe, gallery, Fraction(1, 10))
        assert_equal(engine(features, ids, probe, gallery, "1/10"), expected)


def test_exact_with_a_search_as_wrong_as_the_bound_allows(monkeypatch):
    """A search whose fast scores err by up to 0.9 of the margin, at random: the
    proof (two margins between the list's end and the best non-mate) must hold."""

    class Noisy(identification_search.GalleryIndex):
        def top(self, queries, k):
            margin = fast_score_margin(queries.shape[1])
            exact = queries.astype(np.float64) @ self._unit[self.images].T.astype(np.float64)
            rng = np.random.default_rng(k)
            noisy = (exact + rng.uniform(-0.9, 0.9, exact.shape) * margin).astype(np.float32)
            order = np.argsort(-noisy, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(noisy, order, axis=1), order

    monkeypatch.setattr(identification_search, "GalleryIndex", Noisy)
    for features, ids, probe, gallery in (packed(4), packed(5, gallery_size=300), contested(10)):
        for fpir in ("1/10", "1/2"):
            expected = reference(features, ids, probe, gallery, Fraction(fpir))
            assert_equal(engine(features, ids, probe, gallery, fpir), expected)


def test_invalid_gallery_images_never_win():
    """Zero vectors would score 0.0; here the mate's only image scores about -0.6."""
    features = np.array([[1, 0, 0], [-0.6, 0.8, 0], [0, 0, 0], [np.nan, 1, 0], [1, 0.01, 0]],
                        dtype=np.float32)
    ids = np.array([0, 1, 2, 3, 1])
    probe = np.array([True, False, False, False, True])
    gallery = ~probe
    expected = reference(features, ids, probe, gallery, Fraction(1, 10))
    assert expected["hits"] == expected["mated"] == 1  # -0.6 > -inf, not > 0.0
    assert_equal(engine(features, ids, probe, gallery, "1/10"), expected)


@pytest.mark.skipif(faiss_gpus() == 0,
                    reason="faiss has no GPU here (faiss-cpu build or no CUDA device)")
def test_gpu_index_equals_cpu_index():
    for features, ids, probe, gallery in (contested(6), packed(3)):
        cpu = engine(features, ids, probe, gallery, "1/10", device="cpu")
        gpu = engine(features, ids, probe, gallery, "1/10", device="gpu")
        assert gpu.to_json() == cpu.to_json() and gpu.tpir == cpu.tpir
        assert gpu.threshold == cpu.threshold


def test_an_image_with_both_tags_is_an_error_naming_its_row():
    features, ids, probe, gallery = contested(7)
    row = int(np.flatnonzero(gallery)[5])
    probe = probe.copy()
    probe[row] = True
    with pytest.raises(InvalidInput, match=f"image row {row} carries both") as error:
        engine(features, ids, probe, gallery, "1/10")
    assert error.value.code == "labels_invalid"


def test_without_a_mated_probe_it_cannot_be_scored():
    features, ids, probe, gallery = contested(8)
    probe &= ~np.isin(ids, ids[gallery])
    with pytest.raises(InvalidInput, match="no probe's identity") as error:
        engine(features, ids, probe, gallery, "1/10")
    assert error.value.code == "protocol_unscorable"


def test_json_fields():
    features, ids, probe, gallery = contested(9)
    result = engine(features, ids, probe, gallery, 1)
    doc = result.to_json()
    assert set(doc) == {"tpir", "fnir", "rank1", "threshold", "mated", "nonmated", "hits",
                        "nonmated_accepted"}
    assert doc["threshold"] is None  # fpir 1: every non-mated search is accepted
    assert doc["tpir"] == float(result.tpir) and doc["fnir"] == float(1 - result.tpir)
