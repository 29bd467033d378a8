"""A protocol's score as the scorer stores it: ``mfr score --json``'s fields plus the service's.

One flat JSON object per protocol, whatever its kind (DESIGN.md sections 3, 3.1):

- the kind's ``mfr score --json`` fields, exactly (TAR kinds: ``tar, far,
  threshold, genuine, impostor, genuine_accepted, impostors_accepted``;
  ``pairs`` with ``metric = "accuracy"``: ``accuracy, accuracy_std,
  fold_accuracies, thresholds, pairs``; ``identification``: ``tpir, fnir,
  rank1, threshold, mated, nonmated, hits, nonmated_accepted``);
- what the service adds (:data:`SERVICE_FIELDS`): ``kind``, ``rate`` (``tar``,
  ``accuracy`` or ``tpir``), ``rate_exact`` ("p/q", what ranks), and for TAR
  kinds ``tar_exact``, the ROC points, ``rounds`` and ``candidates``.

These objects are a round's proven results (scoring_rounds.results), the job's
scores (scoring_jobs.scores), the result JSON's protocols and, through
``services.scorer.servicer.protocol_score``, the Job message's ProtocolScores.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

from mfr.challenge import Challenge
from services.scorer.engine import ProtocolResult, rate_of, result_json, roc_json

#: Keys of a stored score that ``mfr score --json`` does not report (protocol_id: the
#: job's scores list names each entry).
SERVICE_FIELDS = frozenset({"protocol_id", "kind", "rate", "rate_exact", "tar_exact", "roc",
                            "rounds", "candidates"})


def score_entry(result) -> dict:
    """The stored score of one protocol's engine result (any kind)."""
    protocol = result.protocol
    entry = dict(result_json(result))
    if isinstance(result, ProtocolResult):
        # Unreduced, as always: tar_exact says how many genuine pairs there were.
        tar_exact = f"{result.genuine_accepted}/{result.genuine}"
        entry.update(tar_exact=tar_exact, roc=[roc_json(p) for p in result.roc],
                     rounds=result.rounds, candidates=result.candidates)
        rate_exact = tar_exact
    elif protocol.rate == "tpir":
        rate_exact = f"{result.hits}/{result.mated}"
    else:
        rate = rate_of(result)
        rate_exact = f"{rate.numerator}/{rate.denominator}"
    entry.update(kind=protocol.kind, rate=protocol.rate, rate_exact=rate_exact)
    return entry


def offline_fields(entry: Mapping) -> dict:
    """The ``mfr score --json`` fields of a stored score (its kind's, nothing else)."""
    return {key: value for key, value in entry.items() if key not in SERVICE_FIELDS}


def rate_exact(entry: Mapping) -> Fraction:
    """The exact rate a stored score ranks by (scores stored before the kinds: its TAR)."""
    return Fraction(entry.get("rate_exact") or entry["tar_exact"])


def in_challenge_order(challenge: Challenge, *parts: Mapping[str, dict]) -> dict[str, dict]:
    """Stored scores from several sources (rounds, listed kinds) in the challenge's order."""
    merged: dict[str, dict] = {}
    for part in parts:
        merged.update(part)
    missing = [p.id for p in challenge.protocols if p.id not in merged]
    if missing:
        raise RuntimeError(f"no result for protocols {', '.join(missing)}")
    return {p.id: merged[p.id] for p in challenge.protocols}


def ranking_of(challenge: Challenge, scores: Mapping[str, Mapping]) -> Fraction | None:
    """The exact ranking score from the stored scores' exact rates."""
    return challenge.ranking_score({pid: rate_exact(s) for pid, s in scores.items()})

