"""Impostor floors: how low a fast score must reach to be kept as a candidate.

The threshold of a protocol is the (k+1)-th largest impostor score, so only
impostor pairs near the top matter. A *floor* ``f`` keeps every impostor
whose fast score is ``>= f``; merge then proves the floor was low enough
(services/scorer/engine/merge.py). A good floor keeps a few times ``k + 1`` pairs:
too high costs another pass, too low costs memory and canonical re-scoring.

The floor is read off a deterministic sample: random row and column subsets
of the protocol's valid images (seeded by the round, universe and protocol,
never by the backend or the split), scored by one fast GEMM, same-identity
pairs dropped. If a fraction ``q = E / N_valid_impostor`` of all impostors
should lie above the floor (``E`` the expected candidate count), the floor is
the ``ceil(q * S)``-th largest of the ``S`` sample scores; the sample is sized
so that this rank is at least ``SAMPLE_HITS``. Protocols small enough that
``E`` reaches half their impostors keep every pair (floor ``-inf``), and then
need no sample at all.

The sample also estimates TAR at the FAR decades above the target (ROC points
for plots) where the candidates cannot prove them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from services.scorer.engine.canonical import Embeddings
from services.scorer.engine.universes import Universe

SEED = 20211011
EXPECTED_FACTOR = 4  # expected candidates per protocol: 4 (k + 1) ...
EXPECTED_MIN = 1 << 10  # ... and never fewer (robust for small k) ...
# ... nor fewer than sqrt(N_valid_impostor) / 2: the sample shrinks as the
# candidates grow, and at this balance their costs are about equal (measured,
# docs/scoring.md). At MR-All scale 4 (k + 1) is far larger anyway.
EXPECTED_ROOT_DIVISOR = 2
SAMPLE_HITS = 32  # sample scores expected above the floor: +-18% on the count
SAMPLE_MIN = 1 << 18  # enough for ROC estimates down to about 1e-4
SAMPLE_SIDE_MAX = 8192  # rows (and columns) per sample GEMM
SAMPLE_TOP = 4096  # largest sample scores kept for a retry's lower floor
ROC_SAMPLE = 1 << 20  # sample scores behind the estimated ROC points
RETRY_FACTOR = 16  # a retry expects this many times more candidates

TAKE_ALL = float("-inf")
SEARCH_DONE = float("inf")


@dataclass(frozen=True)
class FloorSettings:
    expected_factor: int = EXPECTED_FACTOR
    expected_min: int = EXPECTED_MIN
    expected_root_divisor: int = EXPECTED_ROOT_DIVISOR
    sample_hits: int = SAMPLE_HITS
    sample_min: int = SAMPLE_MIN
    sample_side_max: int = SAMPLE_SIDE_MAX
    seed: int = SEED


DEFAULT_FLOORS = FloorSettings()


@dataclass(frozen=True)
class FloorChoice:
    floor: float  # a float32 value, or -inf (keep all)
    expected: int  # the candidate count the floor aims at
    sample_size: int  # impostor pairs in the sample (0: no sample)
    sample_top: np.ndarray  # float32, descending, at most SAMPLE_TOP
    roc_estimates: dict[Fraction, float]  # FAR level -> estimated threshold


def roc_levels(far: Fraction) -> list[Fraction]:
    """FAR decades 1e-1, 1e-2, ... above the target, then the target itself."""
    levels = []
    level = Fraction(1, 10)
    while level > far:
        levels.append(level)
        level /= 10
    return levels + [far]


def threshold_rank(far: Fraction, impostor: int) -> int:
    """k + 1 with k = floor(far * N_imp), in exact arithmetic."""
    return math.floor(far * impostor) + 1


def choose_floor(
    backend,
    emb: Embeddings,
    identity: np.ndarray,
    universe: Universe,
    bit: int,
    far: Fraction,
    impostor: int,
    valid_impostor: int,
    round_number: int,
    settings: FloorSettings,
) -> FloorChoice:
    rank = threshold_rank(far, impostor)
    expected = max(settings.expected_factor * rank, settings.expected_min,
                   math.isqrt(valid_impostor) // settings.expected_root_divisor)
    if rank > valid_impostor or 2 * expected >= valid_impostor:
        return FloorChoice(TAKE_ALL, valid_impostor, 0, np.empty(0, np.float32), {})
    wanted = max(settings.sample_hits * valid_impostor // expected, settings.sample_min)
    sample = draw_sample(backend, emb, identity, universe, bit, wanted,
                         (settings.seed, round_number, universe.index, bit),
                         settings.sample_side_max)
    size = sample.size
    top = min(SAMPLE_TOP, size)
    descending = -sample
    if top < size:
        descending = np.partition(descending, top - 1)
    sample_top = (-np.sort(descending[:top])).astype(np.float32)
    floor_at = math.ceil(Fraction(expected, valid_impostor) * size)
    if not 1 <= floor_at <= size:
        floor = TAKE_ALL
    elif floor_at <= top:
        floor = float(sample_top[floor_at - 1])
    else:
        floor = float(-np.partition(descending, floor_at - 1)[floor_at - 1])
    return FloorChoice(floor, expected, size, sample_top,
                       roc_estimates(sample, far, impostor, valid_impostor))


def roc_estimates(sample: np.ndarray, far: Fraction, impostor: int, valid_impostor: int
                  ) -> dict[Fraction, float]:
    """Estimated thresholds at the ROC levels, from at most ROC_SAMPLE sample scores.

    Plots need a few digits, not exactness: a strided subsample keeps this cheap.
    """
    sub = sample[:: max(1, -(-sample.size // ROC_SAMPLE))]
    ranks = {}
    for level in roc_levels(far):
        level_rank = threshold_rank(level, impostor)
        if level_rank <= valid_impostor:
            ranks[level] = max(1, math.ceil(Fraction(level_rank, valid_impostor) * sub.size))
    kth = sorted({r - 1 for r in ranks.values() if r <= sub.size})
    descending = np.partition(-sub, kth) if kth else -sub
    return {level: (float(-descending[r - 1]) if r <= sub.size else TAKE_ALL)
            for level, r in ranks.items()}


def draw_sample(backend, emb: Embeddings, identity: np.ndarray, universe: Universe, bit: int,
                wanted: int, seed: tuple[int, ...], side_max: int) -> np.ndarray:
    """Fast scores of sampled impostor pairs of one protocol (unordered)."""
    rng = np.random.default_rng(list(seed))
    mask = np.int64(1) << bit
    row_pool = universe.rows[(universe.row_bits & mask) != 0]
    col_pool = universe.cols[(universe.col_bits & mask) != 0]
    row_pool = row_pool[emb.valid[row_pool]]
    col_pool = col_pool[emb.valid[col_pool]]
    side = min(math.isqrt(max(wanted, 1)) + 1, side_max)
    n_rows = min(side, row_pool.size)
    n_cols = min(max(-(-wanted // max(n_rows, 1)), 1), side_max, col_pool.size)
    rows = np.sort(rng.choice(row_pool, size=n_rows, replace=False))
    cols = np.sort(rng.choice(col_pool, size=n_cols, replace=False))
    scores = backend.fast_scores(emb, rows, cols)
    impostor = identity[rows][:, None] != identity[cols][None, :]
    return scores[impostor].astype(np.float32, copy=False)


def lowered_floor(floor: float, expected: int, sample_size: int, sample_top: np.ndarray,
                  valid_impostor: int, kept: int, rank: int, kth: float | None,
                  margin: float, round_number: int) -> tuple[float, int]:
    """The next round's floor for a protocol whose floor was not proven low enough.

    - Enough candidates, but the (k+1)-th largest ``v`` sits within the
      margin of the floor (dense or tied scores): a floor just under
      ``v - 2 margin`` keeps everything kept now, so the next (k+1)-th
      largest is ``>= v`` and the proof must hold.
    - Too few candidates: aim at ``RETRY_FACTOR`` times more, read off the
      sample when it reaches that far, else step down by ``2**round / 64``.
    Either way the floor drops by at least ``2 margin``, and a floor below -1
    keeps every pair, so the rounds end.
    """
    ceiling = float(np.nextafter(np.float32(floor - 2 * margin), np.float32(-np.inf)))
    if kept >= rank and kth is not None:
        new = min(float(np.nextafter(np.float32(kth - 2 * margin), np.float32(-np.inf))), ceiling)
    else:
        expected *= RETRY_FACTOR
        if 2 * expected >= valid_impostor:
            return TAKE_ALL, expected
        position = math.ceil(Fraction(expected, valid_impostor) * sample_size) if sample_size else 0
        if 1 <= position <= sample_top.size:
            new = min(float(sample_top[position - 1]), ceiling)
        else:
            new = min(float(np.float32(floor - 2.0**round_number / 64)), ceiling)
    return (new if new >= -1.0 else TAKE_ALL), expected
