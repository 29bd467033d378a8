"""Leaderboards: which submission represents each participant, in which order, frozen when.

The public-entry rule, for one participant on one track: the scored submission
they chose with "Set Public"; until they choose (or while the chosen one is
being re-run), their best scored submission (highest exact ranking score,
earlier submission on ties). Entries are ordered by exact ranking score,
descending; ties by earlier submission, then by submission id so that the
order never depends on the database's whims. Baselines (participants the
organisers published) are ranked like everyone and marked ``baseline``.

Freezing: once the challenge closes, no new submission and no change of public
entry is accepted; submissions made in time that are still being evaluated
still join. The final board is recorded as a snapshot by the organiser's
``freeze``, or automatically once the challenge closed and nothing made in
time is still pending; from then on the snapshot is the board, whatever
happens to the submissions (re-runs included).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from mfr.challenge import Challenge
from mfr.ranking.scores import fraction_text, parse_fraction

Clock = Callable[[], datetime]
PENDING_STATES = ("queued", "validating", "embedding", "scoring")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Candidate:
    """A scored submission that may represent its participant."""

    submission_id: str
    participant_id: str
    participant: str
    organisation: str
    organisation_hidden: bool
    baseline: bool
    ranking_exact: Fraction
    protocols: dict[str, float]
    model_size_mb: float | None
    latency_ms: float | None
    submitted_at: datetime
    chosen: bool  # the participant pressed "Set Public" on it

    def order_key(self) -> tuple:
        return (-self.ranking_exact, self.submitted_at, self.submission_id)


@dataclass(frozen=True)
class Entry:
    rank: int
    submission_id: str
    participant_id: str
    participant: str
    organisation: str
    organisation_hidden: bool
    baseline: bool
    ranking_exact: Fraction
    protocols: dict[str, float]
    model_size_mb: float | None
    latency_ms: float | None
    submitted_at: datetime

    @property
    def ranking_score(self) -> float:
        return float(self.ranking_exact)

    def to_json(self, reveal: bool = False) -> dict:
        """The HTTP API's entry; ``reveal`` (organisers, snapshots) keeps hidden organisations."""
        return {
            "rank": self.rank,
            "participant": self.participant,
            "organisation": self.organisation if reveal or not self.organisation_hidden else None,
            "organisation_hidden": self.organisation_hidden,
            "baseline": self.baseline,
            "submission_id": self.submission_id,
            "ranking_score": self.ranking_score,
            "ranking_exact": fraction_text(self.ranking_exact),
            "protocols": dict(self.protocols),
            "model_size_mb": self.model_size_mb,
            "latency_ms": self.latency_ms,
            "submitted_at": self.submitted_at.isoformat(),
            **({"participant_id": self.participant_id} if reveal else {}),
        }

    @classmethod
    def from_json(cls, data: dict) -> Entry:
        return cls(
            rank=int(data["rank"]), submission_id=data["submission_id"],
            participant_id=data.get("participant_id", ""), participant=data["participant"],
            organisation=data.get("organisation") or "",
            organisation_hidden=bool(data.get("organisation_hidden")),
            baseline=bool(data.get("baseline")), ranking_exact=parse_fraction(data["ranking_exact"]),
            protocols={k: float(v) for k, v in data["protocols"].items()},
            model_size_mb=data.get("model_size_mb"), latency_ms=data.get("latency_ms"),
            submitted_at=datetime.fromisoformat(data["submitted_at"]),
        )


@dataclass(frozen=True)
class Board:
    challenge_id: str
    track_id: str
    entries: tuple[Entry, ...]
    frozen: bool
    updated_at: datetime | None
    frozen_at: datetime | None = None
    closed: bool = False
    extra: dict = field(default_factory=dict)

    def to_json(self, challenge: Challenge | None = None, reveal: bool = False) -> dict:
        out = {
            "challenge": self.challenge_id,
            "track": self.track_id,
            "frozen": self.frozen,
            "frozen_at": self.frozen_at.isoformat() if self.frozen_at else None,
            "closed": self.closed,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "entries": [e.to_json(reveal) for e in self.entries],
        }
        if challenge is not None:
            out["protocols"] = [{"id": p.id, "title": p.title, "far": float(p.far)}
                                for p in challenge.protocols]
            out["weights"] = {k: float(v) for k, v in challenge.weights.items()}
        return out

    def entry_of(self, participant_id: str) -> Entry | None:
        return next((e for e in self.entries if e.participant_id == participant_id), None)


def choose_entries(candidates: Iterable[Candidate]) -> list[Entry]:
    """The public-entry rule and the order (see the module docstring)."""
    by_participant: dict[str, list[Candidate]] = {}
    for cand in candidates:
        by_participant.setdefault(cand.participant_id, []).append(cand)
    shown = []
    for cands in by_participant.values():
        chosen = [c for c in cands if c.chosen]
        shown.append(chosen[0] if chosen else min(cands, key=Candidate.order_key))
    shown.sort(key=Candidate.order_key)
    return [
        Entry(rank=i, submission_id=c.submission_id, participant_id=c.participant_id,
              participant=c.participant, organisation=c.organisation,
              organisation_hidden=c.organisation_hidden, baseline=c.baseline,
              ranking_exact=c.ranking_exact, protocols=c.protocols,
              model_size_mb=c.model_size_mb, latency_ms=c.latency_ms, submitted_at=c.submitted_at)
        for i, c in enumerate(shown, start=1)
    ]


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

    def __init__(self, pool: ConnectionPool, challenge: Challenge, clock: Clock = utc_now) -> None:
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

    def _pending_in_time(self, conn, track_id: str) -> bool:
        return conn.execute(
            "SELECT 1 FROM submissions WHERE challenge_id = %s AND track_id = %s"
            " AND state = ANY(%s) AND created_at < %s LIMIT 1",
            (self.challenge.id, track_id, list(PENDING_STATES), self.challenge.closes),
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
        protocols={pid: float(s["tar"]) for pid, s in scores.items()},
        model_size_mb=row["model_size_mb"], latency_ms=row["latency_ms"],
        submitted_at=row["created_at"], chosen=row["public"],
    )


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    """A participant's text as a CSV cell that spreadsheets show instead of evaluating
    (OWASP CSV injection: a name such as ``=HYPERLINK(...)`` gets a leading apostrophe)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def export_csv(board: Board, challenge: Challenge, reveal: bool = True) -> str:
    """One row per entry; rates as full-precision fractions of 1, as in the JSON."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    protocol_ids = [p.id for p in challenge.protocols]
    writer.writerow(["rank", "participant", "organisation", "organisation_hidden", "baseline",
                     "submission_id", "ranking_score", "ranking_exact", *protocol_ids,
                     "model_size_mb", "latency_ms", "submitted_at"])
    for e in board.entries:
        org = e.organisation if reveal or not e.organisation_hidden else ""
        writer.writerow([e.rank, _cell(e.participant), _cell(org), str(e.organisation_hidden).lower(),
                         str(e.baseline).lower(), e.submission_id, repr(e.ranking_score),
                         fraction_text(e.ranking_exact),
                         *(repr(e.protocols[p]) if p in e.protocols else "" for p in protocol_ids),
                         "" if e.model_size_mb is None else repr(e.model_size_mb),
                         "" if e.latency_ms is None else repr(e.latency_ms),
                         e.submitted_at.isoformat()])
    return out.getvalue()
