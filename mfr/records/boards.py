"""Leaderboards of one challenge, read from PostgreSQL (the ranker and the gateway share it).

The public-entry rule and the order are :mod:`mfr.ranking.board`'s; this module
reads their inputs and keeps the frozen boards. Freezing: once the challenge
closes, no new submission and no change of public entry is accepted, and the
live board is shown ``frozen``; submissions made in time that are still being
evaluated still join. The final board is recorded as a snapshot by the
organiser's ``freeze``, or by the close (:meth:`Leaderboards.freeze_final`) once
nothing made in time is still pending; from then on the snapshot is the board,
whatever happens to the submissions (re-runs included).

Reads never write: ``board``, ``shown_ids`` and ``is_shown`` only SELECT. A read
that froze the board made every GET a writer that could wait on locks or fail on
a read-only connection, and the close took effect only when someone looked. The
close is a write path of its own, a scheduled task of the dispatcher, the
process that runs while anything is pending (``services/dispatcher/closer.py``):
one tick after the last in-time submission ends, idempotent, safe in every replica.
"""

from __future__ import annotations

from datetime import datetime

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from mfr.challenge import Challenge
from mfr.clock import Clock, system_clock
from mfr.ranking.board import Board, Candidate, Entry, choose_entries
from mfr.ranking.scores import parse_fraction, rate_value
from mfr.records.states import PENDING

_CANDIDATES_OF = """
    SELECT s.id::text AS submission_id, s.participant_id::text AS participant_id,
           s.created_at, s.updated_at, s.ranking_exact, {scores} AS scores, s.model_size_mb,
           s.latency_ms, s.public, p.name, p.organisation, p.hide_organisation, p.is_baseline
    FROM submissions s JOIN participants p ON p.id = s.participant_id
    WHERE s.challenge_id = %(challenge)s AND s.track_id = %(track)s AND s.state = 'scored'
      AND s.ranking_exact IS NOT NULL AND (%(closes)s::timestamptz IS NULL
                                           OR s.created_at < %(closes)s OR p.is_baseline)
"""
_CANDIDATES = _CANDIDATES_OF.format(scores="s.scores")
# One participant's candidates, without their scores (ROC curves): enough to know which
# of theirs is shown, since the public-entry rule picks each participant's entry from
# their own submissions only, by exact ranking score and time.
_OWN_CANDIDATES = (_CANDIDATES_OF.format(scores="NULL::jsonb")
                   + " AND s.participant_id = %(participant)s")
_SNAPSHOT_IDS = """
    SELECT ARRAY(SELECT e->>'submission_id' FROM jsonb_array_elements(board->'entries') e) AS ids
    FROM leaderboard_snapshots WHERE challenge_id = %s AND track_id = %s
"""


class Leaderboards:
    """Boards of one challenge, read from PostgreSQL (the ranker and the gateway share it)."""

    def __init__(self, pool: ConnectionPool, challenge: Challenge, clock: Clock = system_clock) -> None:
        self.pool = pool
        self.challenge = challenge
        self.clock = clock

    def closed(self) -> bool:
        closes = self.challenge.closes
        return closes is not None and self.clock() >= closes

    # --- reads: never a write --------------------------------------------------------
    def board(self, track_id: str, conn=None) -> Board:
        """The snapshot when frozen, else the live board (``frozen`` once closed)."""
        self.challenge.track(track_id)  # unknown track -> InvalidInput
        if conn is None:
            with self.pool.connection() as own:
                return self.board(track_id, own)
        snapshot = conn.execute(
            "SELECT frozen_at, board FROM leaderboard_snapshots"
            " WHERE challenge_id = %s AND track_id = %s", (self.challenge.id, track_id)).fetchone()
        if snapshot:
            return self._from_snapshot(track_id, snapshot)
        return self.live_board(track_id, conn)

    def live_board(self, track_id: str, conn) -> Board:
        rows = conn.execute(_CANDIDATES, self._params(track_id)).fetchall()
        order = [p.id for p in self.challenge.protocols]
        entries = choose_entries(_candidate(row, order) for row in rows)
        updated = max((row["updated_at"] for row in rows), default=None)
        closed = self.closed()
        return Board(self.challenge.id, track_id, tuple(entries), frozen=closed,
                     updated_at=updated, closed=closed)

    def frozen(self, track_id: str, conn) -> bool:
        """True when participants may no longer change the board (closed or snapshotted)."""
        if self.closed():
            return True
        return conn.execute("SELECT 1 FROM leaderboard_snapshots WHERE challenge_id = %s"
                            " AND track_id = %s", (self.challenge.id, track_id)).fetchone() is not None

    def shown_ids(self, track_ids: set[str], participant_id: str | None = None) -> set[str]:
        """Ids of the submissions the boards of these tracks show now (the public entries);
        with ``participant_id``, only that participant's are looked at (no board is built)."""
        known = {t.id for t in self.challenge.tracks}
        shown: set[str] = set()
        with self.pool.connection() as conn:
            for track_id in sorted(track_ids & known):
                shown |= self._shown_on(conn, track_id, participant_id)
        return shown

    def is_shown(self, row: dict) -> bool:
        """Whether a board shows this submission (a row of ``mfr.records.submissions``):
        decided from its participant's candidates on its track, or the track's snapshot."""
        if row["challenge_id"] != self.challenge.id:
            return False
        return row["id"] in self.shown_ids({row["track_id"]}, row["participant_id"])

    # --- writes: the organiser's freeze and the close ------------------------------------
    def freeze(self, track_id: str, by: str = "organiser", conn=None) -> Board:
        """Record the final board of a track (idempotent: an existing snapshot is kept)."""
        self.challenge.track(track_id)
        if conn is None:
            with self.pool.connection() as own:
                return self.freeze(track_id, by, own)
        self._record(conn, self.live_board(track_id, conn), by)
        conn.commit()
        return self.board(track_id, conn)

    def freeze_final(self) -> list[str]:
        """The close: once the challenge closed, snapshot (``by="close"``) each track not yet
        frozen whose in-time submissions have all ended; the tracks this call froze.

        Nothing happens before the close. "Nothing pending" and the board are read in one
        REPEATABLE READ transaction, so the snapshot is the board of that very moment;
        several callers at once record one snapshot (the primary key, ON CONFLICT).
        """
        if not self.closed():
            return []
        with self.pool.connection() as conn:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                boards = [self.live_board(track_id, conn) for track_id in self._final_tracks(conn)]
            frozen = [board.track_id for board in boards if self._record(conn, board, "close")]
            conn.commit()
        return frozen

    def unfreeze(self, track_id: str) -> bool:
        with self.pool.connection() as conn:
            deleted = conn.execute("DELETE FROM leaderboard_snapshots WHERE challenge_id = %s"
                                   " AND track_id = %s", (self.challenge.id, track_id)).rowcount
        return bool(deleted)

    # --- helpers ---------------------------------------------------------------------
    def _params(self, track_id: str, participant_id: str | None = None) -> dict:
        return {"challenge": self.challenge.id, "track": track_id,
                "closes": self.challenge.closes, "participant": participant_id}

    def _shown_on(self, conn, track_id: str, participant_id: str | None) -> set[str]:
        snapshot = conn.execute(_SNAPSHOT_IDS, (self.challenge.id, track_id)).fetchone()
        if snapshot:
            return set(snapshot["ids"])
        if participant_id is None:
            return {e.submission_id for e in self.live_board(track_id, conn).entries}
        rows = conn.execute(_OWN_CANDIDATES, self._params(track_id, participant_id)).fetchall()
        return {e.submission_id for e in choose_entries(_candidate(row, []) for row in rows)}

    def _final_tracks(self, conn) -> list[str]:
        """Tracks with no snapshot and no submission made in time still pending."""
        snapshotted = {r["track_id"] for r in conn.execute(
            "SELECT track_id FROM leaderboard_snapshots WHERE challenge_id = %s",
            (self.challenge.id,))}
        open_tracks = [t.id for t in self.challenge.tracks if t.id not in snapshotted]
        if not open_tracks:
            return []
        pending = {r["track_id"] for r in conn.execute(
            "SELECT DISTINCT track_id FROM submissions WHERE challenge_id = %s"
            " AND track_id = ANY(%s) AND state = ANY(%s) AND created_at < %s",
            (self.challenge.id, open_tracks, list(PENDING), self.challenge.closes))}
        return [t for t in open_tracks if t not in pending]

    def _record(self, conn, board: Board, by: str) -> bool:
        """Insert the snapshot unless one exists; True when this call recorded it."""
        return conn.execute(
            "INSERT INTO leaderboard_snapshots (challenge_id, track_id, frozen_at, frozen_by, board)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (self.challenge.id, board.track_id, self.clock(), by,
             Jsonb({"entries": [e.to_json(reveal=True) for e in board.entries],
                    "updated_at": board.updated_at.isoformat() if board.updated_at else None})),
        ).rowcount == 1

    def _from_snapshot(self, track_id: str, snapshot: dict) -> Board:
        data = snapshot["board"]
        updated = data.get("updated_at")
        return Board(self.challenge.id, track_id,
                     tuple(Entry.from_json(e) for e in data["entries"]), frozen=True,
                     updated_at=datetime.fromisoformat(updated) if updated else None,
                     frozen_at=snapshot["frozen_at"], closed=self.closed())


def _candidate(row: dict, order: list[str]) -> Candidate:
    stored = row["scores"] or {}
    scores = {pid: stored[pid] for pid in order if pid in stored}  # the challenge's order
    return Candidate(
        submission_id=row["submission_id"], participant_id=row["participant_id"],
        participant=row["name"], organisation=row["organisation"],
        organisation_hidden=row["hide_organisation"], baseline=row["is_baseline"],
        ranking_exact=parse_fraction(row["ranking_exact"]),
        protocols={pid: rate_value(s) for pid, s in scores.items()},  # TAR, accuracy or TPIR
        model_size_mb=row["model_size_mb"], latency_ms=row["latency_ms"],
        submitted_at=row["created_at"], chosen=row["public"],
    )
