"""A protocol's score as the scorer stores it: ``mfr score --json``'s fields plus the service's.

One flat JSON object per protocol, whatever its kind (DESIGN.md sections 3, 3.1):

- the kind's ``mfr score --json`` fields, exactly (TAR kinds: ``tar, far,
  threshold, genuine, impostor, genuine_accepted, impostors_accepted``;
  ``pairs`` with ``metric = "accuracy"``: ``accuracy, accuracy_std,
  fold_accuracies, thresholds, pairs``; ``identification``: ``tpir, fnir,
  rank1, threshold, mated, nonmated, hits, nonmated_accepted``);
- what the service adds: ``kind``, ``rate`` (``tar``, ``accuracy`` or ``tpir``),
  ``rate_exact`` ("p/q", what ranks), and for TAR kinds ``tar_exact``, the ROC
  points, ``rounds`` and ``candidates``.

These objects are a round's proven results (scoring_rounds.results), the job's
scores (scoring_jobs.scores), the result JSON's protocols and, encoded by
:mod:`mfr.ranking.wire`, the Job message's ProtocolScores. The ranking score is
:func:`mfr.ranking.scores.exact_ranking` of them, as everywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping

from mfr.challenge import Challenge
from mfr.ranking.scores import fraction_text
from services.scorer.engine import ProtocolResult, rate_of, result_json, roc_json


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
        rate_exact = fraction_text(rate_of(result))
    entry.update(kind=protocol.kind, rate=protocol.rate, rate_exact=rate_exact)
    return entry


def in_challenge_order(challenge: Challenge, *parts: Mapping[str, dict]) -> dict[str, dict]:
    """Stored scores from several sources (rounds, listed kinds) in the challenge's order."""
    merged: dict[str, dict] = {}
    for part in parts:
        merged.update(part)
    missing = [p.id for p in challenge.protocols if p.id not in merged]
    if missing:
        raise RuntimeError(f"no result for protocols {', '.join(missing)}")
    return {p.id: merged[p.id] for p in challenge.protocols}

