"""The int8 candidate search (backends/int8.py): a proven bound, and not one number changed.

Data is designed against the fast path: dense score bands far narrower than
the int8 resolution around the threshold, exact ties, rows with a few huge
components (outliers), floors set beside the threshold by less than the
bound, NaN and zero rows; and tiles shared among simulated workers.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from services.scorer.engine import make_plan, normalise, run_rounds, score, score_tile
from services.scorer.engine.backends import select_backend
from services.scorer.engine.backends.cpu import CpuBackend
from services.scorer.engine.backends.int8 import (
    Int8CpuBackend,
    check_kernel,
    product_bound,
    quantise,
)
from services.scorer.engine.canonical import canonical_scores
from services.scorer.engine.floors import FloorSettings

from .reference import MR_PROTOCOLS, brute_force, make_challenge, mr_like

SAMPLED = FloorSettings(expected_min=8, sample_min=2_000, sample_hits=8)

@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of 40 rows x 56 columns: the small tiles here span several of each (as
    16384-row tiles do), and a diagonal tile's blocks start off the column-block grid."""
    from services.scorer.engine.backends import int8 as module

    monkeypatch.setattr(module, "ROW_BLOCK", 40)
    monkeypatch.setattr(module, "COL_BLOCK", 56)


int8_only = pytest.mark.skipif(select_backend("cpu").precision != "int8",
                               reason="no exact int8 kernel on this CPU")


def fp32() -> CpuBackend:
    return select_backend("cpu", precision="fp32")


def int8(threads: int | None = None) -> Int8CpuBackend:
    backend = select_backend("cpu", threads=threads, precision="int8")
    assert backend.precision == "int8", backend.precision_reason
    return backend


def dense_band(count: int, dim: int, seed: int, spread: float) -> np.ndarray:
    """Everything near one direction: impostor scores in a band ~spread**2 wide (1e-6
    at spread 1e-3), far narrower than the int8 step s**2 and the bound."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(dim)
    return (base + spread * rng.standard_normal((count, dim))).astype(np.float32)


def with_outliers(features: np.ndarray, seed: int) -> np.ndarray:
    """A few rows with one or two huge components (beyond the int8 scale)."""
    rng = np.random.default_rng(seed)
    out = features.copy()
    rows = rng.choice(out.shape[0], size=max(3, out.shape[0] // 100), replace=False)
    for row in rows:
        out[row, rng.choice(out.shape[1], size=1 + row % 2, replace=False)] = 50.0 * np.abs(out[row]).max()
    return out


def adversarial(name: str, seed: int = 0):
    if name == "random":
        return mr_like(700, 24, seed)
    if name == "ties":
        return mr_like(700, 32, seed, sparse=True)
    features, labels = mr_like(700, 48, seed)
    if name == "dense":
        return dense_band(700, 48, seed, 1e-3), labels
    if name == "outliers":
        return with_outliers(features, seed), labels
    if name == "opposite":  # near-opposite pairs: cancelling sums
        features[1::2] = -features[0::2] + 1e-3 * features[1::2]
        return features, labels
    raise AssertionError(name)


@int8_only
@pytest.mark.parametrize("name", ["random", "ties", "dense", "outliers", "opposite"])
def test_the_bound_holds_for_every_pair(name):
    features, _ = adversarial(name)
    features[[3, 4]] = 0.0
    emb = normalise(features)
    quant = quantise(emb)
    normal = np.flatnonzero(emb.valid & ~quant.outlier)
    assert (name == "outliers") == bool(quant.outlier.any()) or name != "outliers"
    q = quant.q[normal].astype(np.int64)
    lowp = (quant.scale * quant.scale) * (q @ q.T).astype(np.float64)
    first, second = np.meshgrid(normal, normal, indexing="ij")
    exact = canonical_scores(emb.unit, first.ravel(), second.ravel()).reshape(lowp.shape)
    bound = product_bound(quant, normal, normal)
    worst = float(np.max(np.abs(lowp - exact)))
    assert worst <= bound
    # ... and per strip (rows in blocks, the tile's columns), as the backend uses it.
    for start in range(0, normal.size, 128):
        part = slice(start, start + 128)
        assert np.max(np.abs(lowp[part] - exact[part])) <= product_bound(quant, normal[part], normal)
    assert bound < 0.2  # informative, not vacuous


@int8_only
def test_outlier_rows_are_left_to_float32():
    features, _ = adversarial("outliers")
    quant = quantise(normalise(features))
    assert 3 <= quant.outlier.sum() <= features.shape[0] // 50
    assert not quant.q[quant.outlier].any()


def both(features, labels, challenge, **kwargs):
    kwargs.setdefault("tile_size", 160)
    kwargs.setdefault("floor_settings", SAMPLED)
    a = score(features, labels, challenge, backend=int8(), **kwargs)
    b = score(features, labels, challenge, backend=fp32(), **kwargs)
    return a, b


@int8_only
@pytest.mark.parametrize("name", ["random", "ties", "dense", "outliers", "opposite"])
@pytest.mark.parametrize("seed", [0, 1])
def test_int8_reports_what_fp32_reports(name, seed):
    features, labels = adversarial(name, seed)
    features[[5, 6]] = np.nan
    features[[7]] = 0.0
    challenge = make_challenge(MR_PROTOCOLS, {"mask": 0.25, "mr-all": 0.75})
    a, b = both(features, labels, challenge)
    assert json.dumps(a.to_json(roc=True)) == json.dumps(b.to_json(roc=True))
    assert a.to_json() == brute_force(features, labels, challenge)
    for pid, result in a.results.items():
        other = b.results[pid]
        assert (result.threshold, result.tar, result.genuine_accepted, result.impostors_accepted,
                result.roc) == (other.threshold, other.tar, other.genuine_accepted,
                                other.impostors_accepted, other.roc)


@int8_only
@pytest.mark.parametrize("name", ["dense", "ties", "random"])
def test_floors_beside_the_threshold_by_less_than_the_bound(name):
    """Floors a hair above, at, and a hair under the threshold (within the int8 bound and
    within the float32 margin): retries and proofs on both paths, identical numbers."""
    features, labels = adversarial(name, 3)
    challenge = make_challenge(MR_PROTOCOLS)
    want = brute_force(features, labels, challenge)["protocols"]
    for offset in (1e-7, 0.0, -1e-7, -3e-3):
        outcomes = []
        for backend in (int8(), fp32()):
            emb = normalise(features)
            plan = make_plan(emb, labels, challenge.protocols, backend, tile_size=100,
                             floor_settings=SAMPLED)
            floors = {pid: float(np.float32(want[pid]["threshold"] + offset))
                      for pid in plan.protocols}
            plan = replace(plan, protocols={pid: replace(p, floor=floors[pid])
                                            for pid, p in plan.protocols.items()})
            results, _, _ = run_rounds(plan, emb, backend)
            outcomes.append({pid: (r.threshold, r.tar, r.impostors_accepted, r.roc)
                             for pid, r in results.items()})
        assert outcomes[0] == outcomes[1]
        for pid, (threshold, *_rest) in outcomes[0].items():
            assert threshold == want[pid]["threshold"]


@int8_only
def test_every_protocol_kept_whole_and_default_settings_agree():
    features, labels = mr_like(600, 20, 5)
    challenge = make_challenge(MR_PROTOCOLS)
    a = score(features, labels, challenge, backend=int8())
    b = score(features, labels, challenge, backend=fp32())
    assert a.to_json(roc=True) == b.to_json(roc=True)


def pool(features, workers: int, backend_factory):
    def run(plan):
        partials = []
        for worker in range(workers):
            emb, backend = normalise(features), backend_factory()
            partials += [score_tile(plan, emb, tile, backend) for tile in plan.tiles[worker::workers]]
        return partials[::-1]

    return run


@int8_only
@pytest.mark.parametrize("force_retry", [False, True])
def test_one_and_three_workers_int8_equal_fp32(force_retry):
    features, labels = adversarial("dense", 4)
    features[[9]] = np.nan
    challenge = make_challenge(MR_PROTOCOLS, {"mask": 0.25, "mr-all": 0.75})
    emb = normalise(features)
    plan = make_plan(emb, labels, challenge.protocols, fp32(), tile_size=96,
                     floor_settings=SAMPLED)
    if force_retry:
        plan = replace(plan, protocols={pid: replace(p, floor=0.9999)
                                        for pid, p in plan.protocols.items()})
    outcomes = []
    # Scorer workers (1, 3) and each int8 backend's kernel threads (1, the default, 3).
    for workers, factory in ((1, fp32), (1, lambda: int8(1)), (1, int8), (3, lambda: int8(3)),
                             (3, fp32)):
        results, rounds, _ = run_rounds(plan, None, None, workers=pool(features, workers, factory))
        outcomes.append(({pid: (r.tar, r.threshold, r.impostors_accepted, r.roc)
                          for pid, r in results.items()}, rounds))
    assert all(outcome == outcomes[0] for outcome in outcomes)


def saturating(a_u8: np.ndarray, b_i8: np.ndarray, out=None) -> np.ndarray:
    """A kernel like MLAS's vpmaddubsw path: u8 * s8 pair sums saturate to int16."""
    products = a_u8.astype(np.int64)[:, :, None] * b_i8.astype(np.int64)[None, :, :]
    depth = products.shape[1] // 2 * 2
    pairs = np.clip(products[:, 0:depth:2] + products[:, 1:depth:2], -32768, 32767)
    total = pairs.sum(axis=1) + products[:, depth:].sum(axis=1)
    return (total - 128 * b_i8.astype(np.int64).sum(axis=0)).astype(np.int32)


def exact(a_u8: np.ndarray, b_i8: np.ndarray, out=None) -> np.ndarray:
    return ((a_u8.astype(np.int64) - 128) @ b_i8.astype(np.int64)).astype(np.int32)


def test_the_self_test_refuses_a_saturating_kernel(monkeypatch):
    assert check_kernel(exact, 64) is None
    reason = check_kernel(saturating, 64)
    assert reason is not None and "not exact" in reason
    from services.scorer.engine.backends import int8 as module

    monkeypatch.setattr(module, "onnx_runner", lambda threads: saturating)
    monkeypatch.setattr(module, "KERNEL_CHECK_DIM", 64)
    backend = select_backend("cpu", precision="auto")
    assert backend.precision == "fp32" and "not exact" in backend.precision_reason
    features, labels = mr_like(300, 16, 2)
    challenge = make_challenge(MR_PROTOCOLS)
    got = score(features, labels, challenge, backend=backend, tile_size=64,
                floor_settings=SAMPLED).to_json()
    assert got == brute_force(features, labels, challenge)


def test_fp32_forces_float32_and_unknown_precision_is_refused():
    backend = select_backend("cpu", precision="fp32")
    assert type(backend) is CpuBackend and backend.precision == "fp32"
    assert "forced" in backend.precision_reason
    from mfr.errors import InvalidInput

    with pytest.raises(InvalidInput, match="precision"):
        select_backend("cpu", precision="int4")


@int8_only
def test_mfr_score_json_is_byte_identical_and_the_table_names_the_precision(tmp_path,
                                                                          monkeypatch):
    from .test_scoring_cli import run, write_inputs

    features, labels = adversarial("dense", 6)
    features[4] = np.inf
    paths = write_inputs(tmp_path, features, labels)
    fast = run(paths, "--json", "--roc")
    slow = run(paths, "--json", "--roc", "--precision", "fp32")
    assert fast.exit_code == 0 and slow.exit_code == 0
    assert fast.stdout == slow.stdout
    monkeypatch.setenv("MFR_SCORER_PRECISION", "fp32")
    table = run(paths)
    assert table.exit_code == 0 and "fp32: float32 forced" in " ".join(table.stdout.split())
    monkeypatch.delenv("MFR_SCORER_PRECISION")
    assert "int8" in run(paths).stdout
