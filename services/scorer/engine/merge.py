"""Merging tile partials into exact TAR@FAR, with the proof that the floor was low enough.

For a protocol with floor ``f``, every impostor pair whose fast score is
``>= f`` is a candidate (each tile keeps them all). A pair left out has fast
score ``< f``, so its canonical score is ``< f + margin`` (``margin`` bounds
``|fast - canonical|``, services/scorer/engine/canonical.py). Let ``v`` be the
(k+1)-th largest canonical score among the candidates. If ``v >= f + margin``
every pair left out scores below ``v``: exactly the same pairs score ``> v``
(at most k of them) and ``>= v`` (at least k + 1) among all impostors as among
the candidates, so ``v`` *is* the threshold of DESIGN.md section 3, and
``impostors_accepted = #{candidates > v}`` is exact. Otherwise merge asks for
another round with a lower floor for that protocol (services/scorer/engine/floors.py).

Nothing here depends on which candidates were kept beyond that rule: a GPU
keeping a slightly different set (float32 rounding differs), or the int8 search
a far larger one, proves the same ``v``. Merge looks only at the candidates with
canonical ``>= f + margin``, which every one of them finds, so results, retry
floors and ROC points are identical whatever the backend, the precision and the
split.

The (k+1)-th largest counts pairs touching an invalid image as ``-inf``: when
``k + 1`` exceeds the number of valid impostor pairs the threshold is ``-inf``
and every finite impostor is accepted (still at most k).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from mfr.challenge import Protocol
from mfr.errors import Conflict
from services.scorer.engine.floors import TAKE_ALL, lowered_floor, roc_levels, threshold_rank
from services.scorer.engine.plan import ProtocolPlan, ScoringPlan
from services.scorer.engine.tiles import GENUINE, TilePartial


@dataclass(frozen=True)
class RocPoint:
    """TAR at one FAR level; ``exact`` False: the threshold is a sample estimate."""

    far: Fraction
    tar: Fraction
    threshold: float
    exact: bool


@dataclass(frozen=True)
class ProtocolResult:
    protocol: Protocol
    tar: Fraction
    threshold: float  # canonical score; -inf when every finite impostor is accepted
    genuine: int
    impostor: int
    genuine_accepted: int
    impostors_accepted: int
    roc: tuple[RocPoint, ...]
    candidates: int  # impostor candidates this protocol's proof looked at
    floor: float
    rounds: int

    @property
    def far(self) -> Fraction:
        """The FAR target (the achieved FAR is impostors_accepted / impostor)."""
        return self.protocol.far


@dataclass(frozen=True)
class MergeOutcome:
    results: dict[str, ProtocolResult]  # protocols proven in this round
    retry: ScoringPlan | None  # next round for the others, None when all are done


def merge(plan: ScoringPlan, partials: Iterable[TilePartial]) -> MergeOutcome:
    """Exact results of one round from the partials of every tile of ``plan``."""
    by_universe: dict[int, dict[str, list[TilePartial]]] = {}
    seen: set[str] = set()
    for partial in partials:
        if partial.plan_digest != plan.digest:
            raise Conflict(f"partial of tile {partial.tile.key} belongs to another plan",
                           code="partial_mismatch")
        if partial.tile.key in seen:
            raise Conflict(f"tile {partial.tile.key} merged twice", code="partial_duplicate")
        seen.add(partial.tile.key)
        kinds = by_universe.setdefault(partial.tile.universe, {})
        kinds.setdefault(partial.tile.kind, []).append(partial)
    planned = {t.key for t in plan.tiles}
    foreign = sorted(seen - planned)
    if foreign:
        raise Conflict(f"{len(foreign)} partial(s) of tiles not in the plan, e.g. {foreign[:3]}",
                       code="partials_incomplete")
    missing = [t.key for t in plan.tiles if t.key not in seen]
    if missing:
        raise Conflict(f"{len(missing)} tile(s) missing from the merge, e.g. {missing[:3]}",
                       code="partials_incomplete")

    results: dict[str, ProtocolResult] = {}
    lowered: dict[str, tuple[float, int]] = {}
    for universe in plan.universes:
        searched = plan.searched_protocols(universe)
        if not searched:
            continue
        kinds = by_universe.get(universe.index, {})
        genuine = _concat(kinds.get(GENUINE, []))
        impostor = _concat([p for k, ps in kinds.items() if k != GENUINE for p in ps])
        for protocol_plan in searched:
            outcome = _protocol(plan, protocol_plan, genuine, impostor)
            if isinstance(outcome, ProtocolResult):
                results[protocol_plan.protocol.id] = outcome
            else:
                lowered[protocol_plan.protocol.id] = outcome
    ordered = {pid: results[pid] for pid in plan.protocols if pid in results}
    return MergeOutcome(ordered, plan.next_round(lowered) if lowered else None)


def _concat(partials: list[TilePartial]) -> tuple[np.ndarray, np.ndarray]:
    if not partials:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    return (np.concatenate([p.bits for p in partials]),
            np.concatenate([p.score for p in partials]))


def _protocol(plan: ScoringPlan, pp: ProtocolPlan, genuine: tuple, impostor: tuple
              ) -> ProtocolResult | tuple[float, int]:
    mask = np.int64(1) << pp.bit
    gen = genuine[1][(genuine[0] & mask) != 0]
    imp = impostor[1][(impostor[0] & mask) != 0]
    if pp.floor != TAKE_ALL:
        # Only the candidates the proof can use (canonical >= f + margin), which every
        # backend and precision finds (each one's fast-score margin): the list, and so
        # the retry floors, ROC points and candidate count, are the same whatever found it.
        imp = imp[imp >= pp.floor + plan.margin]
    counts = pp.counts
    if gen.size != counts.genuine:
        raise Conflict(f"protocol {pp.protocol.id!r}: {gen.size} genuine scores for "
                       f"{counts.genuine} genuine pairs", code="merge_inconsistent")
    if pp.floor == TAKE_ALL and imp.size != counts.valid_impostor:
        raise Conflict(f"protocol {pp.protocol.id!r}: {imp.size} impostor scores for "
                       f"{counts.valid_impostor} valid impostor pairs", code="merge_inconsistent")

    # Order statistics by one partition (no full sort: candidates run to millions).
    ranks = [threshold_rank(level, counts.impostor) for level in roc_levels(pp.protocol.far)]
    positions = sorted({imp.size - r for r in ranks if r <= imp.size})
    if positions:
        imp = np.partition(imp, positions)

    def kth_largest(rank: int) -> float | None:
        return float(imp[imp.size - rank]) if imp.size >= rank else None

    def proven_threshold(rank: int) -> float | None:
        if rank > counts.valid_impostor:
            return float("-inf")
        kth = kth_largest(rank)
        if kth is not None and (pp.floor == TAKE_ALL or kth >= pp.floor + plan.margin):
            return kth
        return None

    def above(scores: np.ndarray, threshold: float) -> int:
        return int(np.count_nonzero(scores > threshold))

    rank = pp.rank
    threshold = proven_threshold(rank)
    if threshold is None:
        return lowered_floor(pp.floor, pp.expected, pp.sample_size, pp.sample_top,
                             counts.valid_impostor, int(imp.size), rank, kth_largest(rank),
                             plan.margin, plan.round)
    roc = []
    for level in roc_levels(pp.protocol.far):
        level_threshold = proven_threshold(threshold_rank(level, counts.impostor))
        exact = level_threshold is not None
        if not exact:
            level_threshold = pp.roc_estimates.get(level, threshold)
        roc.append(RocPoint(level, Fraction(above(gen, level_threshold), counts.genuine),
                            level_threshold, exact))
    accepted = above(gen, threshold)
    return ProtocolResult(
        protocol=pp.protocol,
        tar=Fraction(accepted, counts.genuine),
        threshold=threshold,
        genuine=counts.genuine,
        impostor=counts.impostor,
        genuine_accepted=accepted,
        impostors_accepted=above(imp, threshold),
        roc=tuple(roc),
        candidates=int(imp.size),
        floor=pp.floor,
        rounds=plan.round,
    )
