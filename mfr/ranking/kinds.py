"""Checking the results of the accuracy and identification kinds before they are stored.

What the scorer sends is checked like anything that crosses a wire: the rate as
an exact ``"p/q"`` in [0, 1], the kind's documented fields (DESIGN.md 3.1) with
their types, and the consistency the definitions imply (``tpir = hits / mated``,
one accuracy and threshold per fold). Anything else is ``scores_invalid``;
unknown fields are dropped. The rate's float is derived from the exact value,
never taken from the sender, so the column and the ranking cannot disagree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from fractions import Fraction

from mfr.errors import InvalidInput
from mfr.protocols import Protocol

_FRACTION = re.compile(r"(\d+)(?:/(\d+))?")
# Floats the sender computed itself (accuracy, rank-1) agree with ours to rounding.
_TOLERANCE = 1e-9


def invalid(pid: str, why: str) -> InvalidInput:
    return InvalidInput(f"score of protocol {pid!r}: {why}", code="scores_invalid")


def parse_rate(pid: str, text: object) -> Fraction:
    """``"p/q"`` (or ``"0"``, ``"1"``) with 0 <= p/q <= 1: a rate, exactly."""
    match = _FRACTION.fullmatch(text) if isinstance(text, str) else None
    if match is None or match.group(2) is not None and int(match.group(2)) == 0:
        raise invalid(pid, f"rate_exact must be an exact fraction \"p/q\" in [0, 1], got {text!r}")
    value = Fraction(int(match.group(1)), int(match.group(2) or 1))
    if value > 1:
        raise invalid(pid, f"rate_exact {text!r} is above 1")
    return value


def _field(pid: str, score: Mapping, name: str) -> object:
    if score.get(name, ...) is ...:
        raise invalid(pid, f"{name} is missing")
    return score[name]


def _count(pid: str, score: Mapping, name: str) -> int:
    value = _field(pid, score, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid(pid, f"{name} must be a count, got {value!r}")
    return value


def _number(pid: str, name: str, value: object, low: float = 0.0, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise invalid(pid, f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _threshold(pid: str, name: str, value: object) -> float | None:
    """A canonical score; null stands for an infinite one (JSON has no infinity)."""
    if value is None:
        return None
    value = _number(pid, name, value, -math.inf, math.inf)
    return value if math.isfinite(value) else None


def _agrees(pid: str, name: str, sent: object, exact: Fraction) -> None:
    if sent is not None and abs(_number(pid, name, sent) - float(exact)) > _TOLERANCE:
        raise invalid(pid, f"{name} {sent!r} disagrees with rate_exact {exact}")


def accuracy_fields(protocol: Protocol, score: Mapping, exact: Fraction) -> dict:
    pid, folds = protocol.id, protocol.folds
    _agrees(pid, "accuracy", score.get("accuracy"), exact)
    per_fold = {}
    for name in ("fold_accuracies", "thresholds"):
        values = _field(pid, score, name)
        if not isinstance(values, list) or len(values) != folds:
            raise invalid(pid, f"{name} must list one value per fold ({folds})")
        per_fold[name] = values
    return {
        "accuracy": float(exact),
        "accuracy_std": _number(pid, "accuracy_std", _field(pid, score, "accuracy_std"), 0, 1),
        "fold_accuracies": [_number(pid, "fold_accuracies", a) for a in per_fold["fold_accuracies"]],
        # null: +inf, the fold rejects every pair
        "thresholds": [_threshold(pid, "thresholds", t) for t in per_fold["thresholds"]],
        "pairs": _count(pid, score, "pairs"),
    }


def identification_fields(protocol: Protocol, score: Mapping, exact: Fraction) -> dict:
    pid = protocol.id
    counts = {name: _count(pid, score, name)
              for name in ("mated", "nonmated", "hits", "nonmated_accepted")}
    if counts["hits"] > counts["mated"] or counts["nonmated_accepted"] > counts["nonmated"]:
        raise invalid(pid, f"hits {counts['hits']} of {counts['mated']} mated and "
                           f"{counts['nonmated_accepted']} of {counts['nonmated']} non-mated "
                           "accepted are impossible")
    tpir = Fraction(counts["hits"], counts["mated"]) if counts["mated"] else Fraction(0)
    if exact != tpir:
        raise invalid(pid, f"rate_exact {exact} is not hits / mated = {tpir}")
    _agrees(pid, "tpir", score.get("tpir"), exact)
    rank1 = _number(pid, "rank1", _field(pid, score, "rank1"))
    if rank1 < float(tpir) - _TOLERANCE:
        raise invalid(pid, f"rank1 {rank1} is below tpir {float(tpir)} (every hit is a rank-1 hit)")
    return {
        "tpir": float(tpir),
        "fnir": float(1 - tpir),
        "rank1": rank1,
        "threshold": _threshold(pid, "threshold", _field(pid, score, "threshold")),
        **counts,
        "fpir": float(protocol.fpir) if protocol.fpir is not None else None,
    }
