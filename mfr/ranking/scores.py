"""Exact ranking scores: TARs as fractions, weighted by the challenge, compared exactly.

A TAR is ``genuine_accepted / genuine``; the ranking score is the challenge's
weighted sum of those fractions (``0.25 * Mask + 0.75 * MR-All`` for the
built-in challenge), kept as a ``Fraction`` and stored as ``"p/q"`` text so
that two submissions whose float scores print the same are still ordered by
their true values. Floats and percentages are for display only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction

from mfr.challenge import Challenge
from mfr.errors import InvalidInput

# The fields of one protocol's score, as the HTTP API and the exports carry them.
SCORE_FIELDS = ("tar", "far", "threshold", "genuine", "impostor", "genuine_accepted",
                "impostors_accepted")


def exact_tar(score: Mapping) -> Fraction:
    """``genuine_accepted / genuine``; 0 for a protocol without genuine pairs."""
    genuine = int(score["genuine"])
    accepted = int(score["genuine_accepted"])
    if genuine < 0 or not 0 <= accepted <= max(genuine, 0):
        raise InvalidInput(f"genuine_accepted {accepted} is not within 0..{genuine}",
                           code="scores_invalid")
    return Fraction(accepted, genuine) if genuine else Fraction(0)


def exact_ranking(challenge: Challenge, scores: Mapping[str, Mapping]) -> Fraction | None:
    """The challenge's weighted TAR sum, or None when a weighted protocol was not scored."""
    return challenge.ranking_score({pid: exact_tar(score) for pid, score in scores.items()})


def fraction_text(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


def parse_fraction(text: str) -> Fraction:
    return Fraction(text)


def percent(rate: float | None) -> str:
    """A rate in [0, 1] as the seed's tables print it: percent with 3 decimals."""
    return "" if rate is None else f"{100 * rate:.3f}"


def finite_or_none(value) -> float | None:
    """JSON (and PostgreSQL's jsonb) has no infinities: a threshold of -inf is stored as null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def normalise_scores(challenge: Challenge, scores: Mapping[str, Mapping]) -> dict[str, dict]:
    """Checked, JSON-ready scores: known protocols only, counts as ints, TAR from the counts."""
    known = {p.id: index for index, p in enumerate(challenge.protocols)}
    out: dict[str, dict] = {}
    for pid, score in scores.items():
        if pid not in known:
            raise InvalidInput(f"score for unknown protocol {pid!r}", code="scores_invalid")
        tar = exact_tar(score)
        record = {
            "tar": float(tar),
            "far": float(score.get("far", challenge.protocol(pid).far)),
            "threshold": finite_or_none(score.get("threshold")),
            "genuine": int(score["genuine"]),
            "impostor": int(score.get("impostor", 0)),
            "genuine_accepted": int(score["genuine_accepted"]),
            "impostors_accepted": int(score.get("impostors_accepted", 0)),
            "tar_exact": fraction_text(tar),
            # jsonb keeps object keys in its own order: remember the challenge's.
            "order": known[pid],
        }
        roc = score.get("roc") or []
        if roc:
            record["roc"] = [{"far": float(p["far"]), "tar": float(p["tar"]),
                              "threshold": finite_or_none(p.get("threshold")),
                              "exact": bool(p.get("exact", True))} for p in roc]
        out[pid] = record
    return out
