"""k-fold verification accuracy over a pair list (DESIGN.md section 3.1, LFW style).

For each fold f the threshold t_f is chosen on the other folds: the candidates
are their finite canonical scores and ``+inf``; a pair is accepted when its score
is ``>= t``; t_f maximises the correctly classified training pairs, the smallest
such t on ties. Fold accuracies are exact fractions, so the mean (the ranking
rate) is exact too; only the population standard deviation is a float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from mfr.errors import InvalidInput
from mfr.protocols import Protocol


@dataclass(frozen=True)
class AccuracyResult:
    protocol: Protocol
    accuracy: Fraction  # mean of the fold accuracies
    accuracy_std: float  # population standard deviation (ddof 0) of the fold accuracies
    fold_accuracies: tuple[Fraction, ...]
    thresholds: tuple[float, ...]  # t_f per fold; +inf rejects every pair
    pairs: int

    def to_json(self) -> dict:
        return {
            "accuracy": float(self.accuracy),
            "accuracy_std": self.accuracy_std,
            "fold_accuracies": [float(a) for a in self.fold_accuracies],
            # JSON has no infinity: null is +inf (reject all); t_f is never -inf.
            "thresholds": [None if math.isinf(t) else t for t in self.thresholds],
            "pairs": self.pairs,
        }


def _invalid(protocol: Protocol, why: str) -> InvalidInput:
    return InvalidInput(f"protocol {protocol.id!r}: {why}", code="challenge_invalid")


def fold_numbers(protocol: Protocol, count: int, listed: np.ndarray | None) -> np.ndarray:
    """Fold (1..folds) of each pair: the list's fold column, else consecutive equal blocks."""
    folds = protocol.folds
    if listed is None:
        if count % folds:
            raise _invalid(protocol, f"its {count} pairs do not split into folds = {folds} "
                                     f"equal blocks (and the list has no fold column)")
        return np.arange(count, dtype=np.int64) // (count // folds) + 1
    outside = np.flatnonzero(listed > folds)
    if outside.size:
        row = int(outside[0])
        raise _invalid(protocol, f"pair list row {row + 1} has fold {int(listed[row])}, "
                                 f"outside 1..folds = {folds}")
    empty = np.flatnonzero(np.bincount(listed, minlength=folds + 1)[1:] == 0)
    if empty.size:
        raise _invalid(protocol, f"fold {int(empty[0]) + 1} of folds = {folds} has no pair")
    return listed


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The smallest candidate t maximising #{same, score >= t} + #{not same, score < t}."""
    candidates = np.append(np.unique(scores[np.isfinite(scores)]), np.inf)
    genuine = np.sort(scores[same])
    impostor = np.sort(scores[~same])
    correct = (genuine.size - np.searchsorted(genuine, candidates, side="left")
               + np.searchsorted(impostor, candidates, side="left"))
    return float(candidates[int(np.argmax(correct))])  # argmax: the first, smallest t


def accuracy(protocol: Protocol, scores: np.ndarray, same: np.ndarray,
             listed_folds: np.ndarray | None) -> AccuracyResult:
    fold = fold_numbers(protocol, scores.shape[0], listed_folds)
    accuracies, thresholds = [], []
    for f in range(1, protocol.folds + 1):
        test = fold == f
        t = best_threshold(scores[~test], same[~test])
        correct = np.count_nonzero((scores[test] >= t) == same[test])
        accuracies.append(Fraction(int(correct), int(np.count_nonzero(test))))
        thresholds.append(t)
    mean = sum(accuracies, Fraction(0)) / len(accuracies)
    variance = sum(((a - mean) ** 2 for a in accuracies), Fraction(0)) / len(accuracies)
    return AccuracyResult(protocol, mean, math.sqrt(variance), tuple(accuracies),
                          tuple(thresholds), int(scores.shape[0]))
