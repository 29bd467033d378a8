"""A submission's result and its public entry: the two writes at the end of the journey.

**Recording a result** is the last transition of a run (``scoring`` -> ``scored``) and
is made, like every other transition of a run, by the dispatcher holding the
submission's lease, in its lease-guarded UPDATE (:meth:`mfr.records.leases.Leases.advance`):
one writer of a run's states, and a result that can only land on the run it belongs
to (a cancel or re-run meanwhile makes the write touch nothing: ``LeaseLost``). The
scores are checked against the challenge first (:func:`mfr.ranking.scores.normalise_scores`:
a scorer is a remote party too), and the exact ranking score is computed here, once.

**Choosing the public entry** is the participant's (gateway, ``Set Public``): one
transaction that locks the participant and the submission, so two clicks at once
leave exactly one public entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

from psycopg_pool import ConnectionPool

from mfr.challenge import Challenge
from mfr.errors import Conflict
from mfr.ranking.scores import exact_ranking, fraction_text, normalise_scores
from mfr.records import events, participants, submissions
from mfr.records.boards import Leaderboards
from mfr.records.leases import NOW, Claim, Leases


def record(leases: Leases, claim: Claim, challenge: Challenge, scores: Mapping[str, Mapping],
           **columns) -> Fraction | None:
    """Store the claimed run's scores and exact ranking score; its state becomes ``scored``.

    ``scores``: {protocol id: stored form (:mod:`mfr.ranking.wire`)}. InvalidInput
    (``scores_invalid``) when they do not fit the challenge; LeaseLost when the run is
    no longer this dispatcher's. ``columns``: more of the run's columns (the result key).
    Returns the ranking score (None when a weighted protocol was not scored).
    """
    clean = normalise_scores(challenge, scores)
    ranking = exact_ranking(challenge, clean)
    leases.advance(claim, "scored",
                   {"ranking_score": float(ranking) if ranking is not None else None},
                   scores=clean, ranking_exact=fraction_text(ranking) if ranking is not None
                   else None, ranking_score=float(ranking) if ranking is not None else None,
                   scored_at=NOW, **columns)
    return ranking


class Results:
    """The participant's choice of public entry (the gateway's write)."""

    def __init__(self, pool: ConnectionPool, challenge: Challenge, boards: Leaderboards) -> None:
        self.pool = pool
        self.challenge = challenge
        self.boards = boards

    def set_public(self, participant_id: str, submission_id: str) -> None:
        """Make a scored submission its participant's public entry for its track."""
        with self.pool.connection() as conn, conn.transaction():
            participants.lock(conn, participant_id)
            row = submissions.lock(conn, submission_id, participant_id)
            if self.boards.frozen(row["track_id"], conn):
                raise Conflict("the leaderboard is frozen: the public entry can no longer change",
                               code="board_frozen")
            if row["state"] != "scored" or row["ranking_exact"] is None:
                raise Conflict(f"submission {submission_id} is {row['state']}; only a scored "
                               "submission can be public", code="not_scored")
            conn.execute(
                "UPDATE submissions SET public = false, updated_at = now() WHERE participant_id = %s"
                " AND challenge_id = %s AND track_id = %s AND public AND id <> %s",
                (participant_id, row["challenge_id"], row["track_id"], submission_id))
            conn.execute("UPDATE submissions SET public = true, updated_at = now() WHERE id = %s"
                         " AND NOT public", (submission_id,))
            events.add(conn, submission_id, row["state"], {"public": True})
