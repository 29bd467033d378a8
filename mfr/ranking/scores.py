"""Exact ranking scores: each protocol's rate as a fraction, weighted by the challenge.

A protocol ranks by its rate (:attr:`mfr.protocols.Protocol.rate`): TAR for the
TAR kinds (``genuine_accepted / genuine``, from the counts), accuracy for
``pairs`` with ``metric = "accuracy"``, TPIR for ``identification`` (both sent
as an exact ``"p/q"``). The ranking score is the challenge's weighted sum of
those fractions (``0.25 * Mask + 0.75 * MR-All`` for the built-in challenge),
kept as a ``Fraction`` and stored as ``"p/q"`` text so that two submissions
whose float scores print the same are still ordered by their true values.
Floats and percentages are for display only.

A stored protocol score (``submissions.scores[ID]``) carries its ``kind``, its
``rate`` (the name), ``rate_exact`` and its kind's fields (DESIGN.md 3.1). Rows
stored before the kinds existed have no ``rate``: they are TAR scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction

from mfr.challenge import Challenge
from mfr.errors import InvalidInput
from mfr.ranking.kinds import accuracy_fields, identification_fields, invalid, parse_rate

# The fields of one protocol's score, as the HTTP API and the exports carry them, by rate.
SCORE_FIELDS = ("tar", "far", "threshold", "genuine", "impostor", "genuine_accepted",
                "impostors_accepted")
ACCURACY_FIELDS = ("accuracy", "accuracy_std", "fold_accuracies", "thresholds", "pairs")
IDENTIFICATION_FIELDS = ("tpir", "fnir", "rank1", "threshold", "fpir", "mated", "nonmated",
                         "hits", "nonmated_accepted")
FIELDS_BY_RATE = {"tar": SCORE_FIELDS, "accuracy": ACCURACY_FIELDS, "tpir": IDENTIFICATION_FIELDS}


def exact_tar(score: Mapping) -> Fraction:
    """``genuine_accepted / genuine``; 0 for a protocol without genuine pairs."""
    genuine = int(score["genuine"])
    accepted = int(score["genuine_accepted"])
    if genuine < 0 or not 0 <= accepted <= max(genuine, 0):
        raise InvalidInput(f"genuine_accepted {accepted} is not within 0..{genuine}",
                           code="scores_invalid")
    return Fraction(accepted, genuine) if genuine else Fraction(0)


def rate_name(stored: Mapping) -> str:
    """The stored score's rate: ``tar`` for rows stored before the kinds existed."""
    return stored.get("rate") or "tar"


def exact_rate(stored: Mapping) -> Fraction:
    """A stored score's rate as the exact fraction that ranks it."""
    if stored.get("rate_exact"):
        return Fraction(stored["rate_exact"])
    return exact_tar(stored)  # an old TAR row: the counts are the truth


def rate_value(stored: Mapping) -> float:
    """A stored score's rate for display (the leaderboard's column)."""
    return float(stored[rate_name(stored)])


def exact_ranking(challenge: Challenge, scores: Mapping[str, Mapping]) -> Fraction | None:
    """The challenge's weighted sum of the stored scores' rates, or None when a weighted
    protocol was not scored."""
    return challenge.ranking_score({pid: exact_rate(score) for pid, score in scores.items()})


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
    """Checked, JSON-ready scores: known protocols only, each as its kind reports it.

    TAR kinds: counts as ints, the TAR from the counts. Accuracy and
    identification: the rate from ``rate_exact`` (a fraction in [0, 1]), the
    kind's documented fields, typed and checked. A sender's ``kind`` or ``rate``
    must agree with the challenge's protocol; a sender without them (older
    dispatchers) is read as the challenge says, which for TAR kinds is today's.
    """
    known = {p.id: index for index, p in enumerate(challenge.protocols)}
    out: dict[str, dict] = {}
    for pid, score in scores.items():
        if pid not in known:
            raise InvalidInput(f"score for unknown protocol {pid!r}", code="scores_invalid")
        protocol = challenge.protocol(pid)
        for field, expected in (("kind", protocol.kind), ("rate", protocol.rate)):
            sent = score.get(field) or ""
            if sent and sent != expected:
                raise invalid(pid, f"{field} {sent!r}, but the challenge's protocol is {expected!r}")
        if protocol.rate == "tar":
            record = _tar_record(challenge, pid, score)
        else:
            exact = parse_rate(pid, score.get("rate_exact"))
            fields = (accuracy_fields(protocol, score, exact) if protocol.rate == "accuracy"
                      else identification_fields(protocol, score, exact))
            record = {**fields, "rate_exact": fraction_text(exact)}
        # jsonb keeps object keys in its own order: remember the challenge's.
        out[pid] = {"kind": protocol.kind, "rate": protocol.rate, **record, "order": known[pid]}
    return out


def _tar_record(challenge: Challenge, pid: str, score: Mapping) -> dict:
    tar = exact_tar(score)
    if score.get("rate_exact") and parse_rate(pid, score["rate_exact"]) != tar:
        raise invalid(pid, f"rate_exact {score['rate_exact']!r} is not genuine_accepted / genuine")
    record = {
        "tar": float(tar),
        "far": float(score.get("far", challenge.protocol(pid).far)),
        "threshold": finite_or_none(score.get("threshold")),
        "genuine": int(score["genuine"]),
        "impostor": int(score.get("impostor", 0)),
        "genuine_accepted": int(score["genuine_accepted"]),
        "impostors_accepted": int(score.get("impostors_accepted", 0)),
        "tar_exact": fraction_text(tar),
        "rate_exact": fraction_text(tar),
    }
    roc = score.get("roc") or []
    if roc:
        record["roc"] = [{"far": float(p["far"]), "tar": float(p["tar"]),
                          "threshold": finite_or_none(p.get("threshold")),
                          "exact": bool(p.get("exact", True))} for p in roc]
    return record
