"""Canonical scores of listed pairs and TAR@FAR over them (DESIGN.md sections 3, 3.1)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from mfr.errors import InvalidInput
from mfr.protocols import Protocol
from services.scorer.engine.canonical import Embeddings, canonical_scores
from services.scorer.engine.floors import TAKE_ALL, roc_levels, threshold_rank
from services.scorer.engine.merge import ProtocolResult, RocPoint

# Pairs per backend call: bounds the index and score buffers a GPU receives.
_CHUNK = 1 << 20


def listed_scores(emb: Embeddings, first: np.ndarray, second: np.ndarray,
                  backend=None) -> np.ndarray:
    """Canonical float64 score of each listed pair; -inf where either row is invalid."""
    scores = np.full(first.shape[0], -np.inf)
    both = np.flatnonzero(emb.valid[first] & emb.valid[second])
    for start in range(0, both.shape[0], _CHUNK):
        at = both[start:start + _CHUNK]
        if backend is None:
            scores[at] = canonical_scores(emb.unit, first[at], second[at])
        else:
            scores[at] = backend.canonical(emb, first[at], second[at])
    return scores


def unscorable(protocol: Protocol, why: str) -> InvalidInput:
    return InvalidInput(f"protocol {protocol.id!r} cannot be scored: {why}",
                        code="protocol_unscorable")


def tar_at_far(protocol: Protocol, scores: np.ndarray, same: np.ndarray) -> ProtocolResult:
    """TAR@FAR of section 3 over listed pairs, duplicates counted; ``same`` decides."""
    genuine, impostor = scores[same], scores[~same]
    if genuine.size == 0:
        raise unscorable(protocol, "the pair list has no genuine pair (same = 1)")
    if impostor.size == 0:
        raise unscorable(protocol, "the pair list has no impostor pair (same = 0)")
    levels = roc_levels(protocol.far)
    ranks = {level: threshold_rank(level, impostor.size) for level in levels}
    # Every rank is <= N_imp (far < 1); one partition serves every level.
    positions = sorted({impostor.size - r for r in ranks.values()})
    ordered = np.partition(impostor, positions)

    def threshold(level: Fraction) -> float:
        return float(ordered[impostor.size - ranks[level]])

    t = threshold(protocol.far)
    accepted = int(np.count_nonzero(genuine > t))
    roc = tuple(RocPoint(level, Fraction(int(np.count_nonzero(genuine > threshold(level))),
                                         genuine.size), threshold(level), True)
                for level in levels)
    return ProtocolResult(
        protocol=protocol,
        tar=Fraction(accepted, genuine.size),
        threshold=t,
        genuine=int(genuine.size),
        impostor=int(impostor.size),
        genuine_accepted=accepted,
        impostors_accepted=int(np.count_nonzero(impostor > t)),
        roc=roc,
        candidates=int(impostor.size),
        floor=TAKE_ALL,
        rounds=1,
    )
