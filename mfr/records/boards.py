"""Leaderboards of one challenge, read from PostgreSQL (the ranker and the gateway share it).

The public-entry rule and the order are :mod:`mfr.ranking.board`'s; this module
reads their inputs and keeps the frozen boards. Freezing: once the challenge
closes, no new submission and no change of public entry is accepted;
submissions made in time that are still being evaluated still join. The final
board is recorded as a snapshot by the organiser's ``freeze``, or
automatically once the challenge closed and nothing made in time is still
pending; from then on the snapshot is the board, whatever happens to the
submissions (re-runs included).
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

_CANDIDATES = """
    SELECT s.id::text AS submission_id, s.participant_id::text AS participant_id,
           s.created_at, s.updated_at, s.ranking_exact, s.scores, s.model_size_mb,
           s.latency_ms, s.public, p.name, p.organisation, p.hide_organisation, p.is_baseline
    FROM submissions s JOIN participants p ON p.id = s.participant_id
    WHERE s.challenge_id = %(challenge)s AND s.track_id = %(track)s AND s.state = 'scored'
      AND s.ranking_exact IS NOT NULL AND (%(closes)s::timestamptz IS NULL
                                           OR s.created_at < %(closes)s OR p.is_baseline)
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

    def board(self, track_id: str, conn=None) -> Board:
        """The snapshot when frozen, else the live board (snapshotting it when final)."""
        self.challenge.track(track_id)  # unknown track -> InvalidInput
        if conn is None:
            with self.pool.connection() as own:
                return self.board(track_id, own)
        snapshot = conn.execute(
            "SELECT frozen_at, board FROM leaderboard_snapshots"
            " WHERE challenge_id = %s AND track_id = %s", (self.challenge.id, track_id)).fetchone()
        if snapshot:
            return self._from_snapshot(track_id, snapshot)
        board = self.live_board(track_id, conn)
        if board.closed and not self._pending_in_time(conn, track_id):
            return self.freeze(track_id, by="close", conn=conn)
        return board

    def live_board(self, track_id: str, conn) -> Board:
        rows = conn.execute(_CANDIDATES, {"challenge": self.challenge.id, "track": track_id,
                                          "closes": self.challenge.closes}).fetchall()
        order = [p.id for p in self.challenge.protocols]
        entries = choose_entries(_candidate(row, order) for row in rows)
        updated = max((row["updated_at"] for row in rows), default=None)
        closed = self.closed()
        return Board(self.challenge.id, track_id, tuple(entries), frozen=closed,
                     updated_at=updated, closed=closed)

    def freeze(self, track_id: str, by: str = "organiser", conn=None) -> Board:
        """Record the final board of a track (idempotent: an existing snapshot is kept)."""
        self.challenge.track(track_id)
        if conn is None:
            with self.pool.connection() as own:
                return self.freeze(track_id, by, own)
        board = self.live_board(track_id, conn)
        frozen_at = self.clock()
        conn.execute(
            "INSERT INTO leaderboard_snapshots (challenge_id, track_id, frozen_at, frozen_by, board)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (self.challenge.id, track_id, frozen_at, by,
             Jsonb({"entries": [e.to_json(reveal=True) for e in board.entries],
                    "updated_at": board.updated_at.isoformat() if board.updated_at else None})))
        conn.commit()
        return self.board(track_id, conn)

    def unfreeze(self, track_id: str) -> bool:
        with self.pool.connection() as conn:
            deleted = conn.execute("DELETE FROM leaderboard_snapshots WHERE challenge_id = %s"
                                   " AND track_id = %s", (self.challenge.id, track_id)).rowcount
        return bool(deleted)

    def frozen(self, track_id: str, conn) -> bool:
        """True when participants may no longer change the board (closed or snapshotted)."""
        if self.closed():
            return True
        return conn.execute("SELECT 1 FROM leaderboard_snapshots WHERE challenge_id = %s"
                            " AND track_id = %s", (self.challenge.id, track_id)).fetchone() is not None

    def shown_ids(self, track_ids: set[str]) -> set[str]:
        """Ids of the submissions the boards of these tracks show now (the public entries)."""
        known = {t.id for t in self.challenge.tracks}
        shown: set[str] = set()
        for track_id in track_ids & known:
            shown.update(e.submission_id for e in self.board(track_id).entries)
        return shown

    def _pending_in_time(self, conn, track_id: str) -> bool:
        return conn.execute(
            "SELECT 1 FROM submissions WHERE challenge_id = %s AND track_id = %s"
            " AND state = ANY(%s) AND created_at < %s LIMIT 1",
            (self.challenge.id, track_id, list(PENDING), self.challenge.closes),
        ).fetchone() is not None

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
