"""Recording results and choosing the public entry: the ranker's two writes.

Both run in one transaction that first locks the submission (and, for the
public entry, the participant), so a result recorded twice, or two "Set
Public" clicks at once, leave exactly one consistent row behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from mfr.challenge import Challenge
from mfr.errors import Conflict
from mfr.ranking.scores import exact_ranking, fraction_text, normalise_scores
from mfr.records import events, participants, submissions
from mfr.records.boards import Leaderboards

RECORDABLE_STATES = ("scoring", "scored")


@dataclass(frozen=True)
class Recorded:
    ranking: Fraction | None
    rank: int  # the participant's rank on the track when this submission is shown, else 0


class Results:
    def __init__(self, pool: ConnectionPool, challenge: Challenge, boards: Leaderboards) -> None:
        self.pool = pool
        self.challenge = challenge
        self.boards = boards

    def record(self, submission_id: str, scores: Mapping[str, Mapping],
               model_size_mb: float | None = None, latency_ms: float | None = None) -> Recorded:
        """Store a submission's scores and ranking score; state becomes ``scored``.

        Idempotent: recording the same result again changes nothing. Refused
        (Conflict) for a submission that is not being scored, e.g. cancelled.
        """
        clean = normalise_scores(self.challenge, scores)
        ranking = exact_ranking(self.challenge, clean)
        with self.pool.connection() as conn, conn.transaction():
            row = submissions.lock(conn, submission_id)
            if row["challenge_id"] != self.challenge.id:
                raise Conflict(f"submission {submission_id} belongs to challenge "
                               f"{row['challenge_id']!r}, the ranker serves {self.challenge.id!r}",
                               code="wrong_challenge")
            if row["state"] not in RECORDABLE_STATES:
                raise Conflict(f"submission {submission_id} is {row['state']}; only a submission "
                               "being scored takes a result", code="not_scoring")
            conn.execute(
                "UPDATE submissions SET scores = %s, ranking_exact = %s, ranking_score = %s,"
                " model_size_mb = coalesce(%s, model_size_mb), latency_ms = coalesce(%s, latency_ms),"
                " state = 'scored',"
                " scored_at = coalesce(scored_at, now()), progress = NULL, error = NULL,"
                " lease_owner = NULL, lease_until = NULL,"
                " error_code = NULL, updated_at = now() WHERE id = %s",
                (Jsonb(clean), fraction_text(ranking) if ranking is not None else None,
                 float(ranking) if ranking is not None else None, model_size_mb, latency_ms,
                 submission_id))
            if row["state"] != "scored":
                events.add(conn, submission_id, "scored",
                           {"ranking_score": float(ranking) if ranking is not None else None,
                            "run": row["run"]})
        board = self.boards.board(row["track_id"])
        entry = next((e for e in board.entries if e.submission_id == submission_id), None)
        return Recorded(ranking, entry.rank if entry else 0)

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
