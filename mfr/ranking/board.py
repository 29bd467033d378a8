"""Leaderboards: which submission represents each participant, and in which order.

The public-entry rule, for one participant on one track: the scored submission
they chose with "Set Public"; until they choose (or while the chosen one is
being re-run), their best scored submission (highest exact ranking score,
earlier submission on ties). Entries are ordered by exact ranking score,
descending; ties by earlier submission, then by submission id so that the
order never depends on the database's whims. Baselines (participants the
organisers published) are ranked like everyone and marked ``baseline``.
Reading boards from PostgreSQL, and freezing them, is :mod:`mfr.records.boards`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from fractions import Fraction

from mfr.challenge import BOARD_COLUMNS_AFTER, BOARD_COLUMNS_BEFORE, Challenge
from mfr.ranking.scores import fraction_text, parse_fraction


@dataclass(frozen=True)
class Scored:
    """A scored submission and who made it: what a board shows of it."""

    submission_id: str
    participant_id: str
    participant: str
    organisation: str
    organisation_hidden: bool
    baseline: bool
    ranking_exact: Fraction
    protocols: dict[str, float]  # each protocol's rate (TAR, accuracy or TPIR) by id
    model_size_mb: float | None
    latency_ms: float | None
    submitted_at: datetime


@dataclass(frozen=True)
class Candidate(Scored):
    """A scored submission that may represent its participant."""

    chosen: bool  # the participant pressed "Set Public" on it

    def order_key(self) -> tuple:
        return (-self.ranking_exact, self.submitted_at, self.submission_id)


@dataclass(frozen=True)
class Entry(Scored):
    """A line of a board: the participant's shown submission and its rank."""

    rank: int

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
            out["protocols"] = protocols_json(challenge)
            out["weights"] = {k: float(v) for k, v in challenge.weights.items()}
        return out


def protocols_json(challenge: Challenge) -> list[dict]:
    """The board's columns: each protocol and what its entries' number is (its ``rate``:
    ``tar``, ``accuracy`` or ``tpir``) at which target (``far`` or ``fpir``)."""
    return [{"id": p.id, "title": p.title, "kind": p.kind, "rate": p.rate,
             "far": float(p.far) if p.far is not None else None,
             "fpir": float(p.fpir) if p.fpir is not None else None}
            for p in challenge.protocols]


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
        Entry(rank=i, **{f.name: getattr(c, f.name) for f in fields(Scored)})
        for i, c in enumerate(shown, start=1)
    ]


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    """A participant's text as a CSV cell that spreadsheets show instead of evaluating
    (OWASP CSV injection: a name such as ``=HYPERLINK(...)`` gets a leading apostrophe)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def export_csv(board: Board, challenge: Challenge, reveal: bool = True) -> str:
    """One row per entry; rates as full-precision fractions of 1, as in the JSON: a column
    per protocol id holding its rate (TAR, accuracy or TPIR, as the board JSON's
    ``protocols`` says)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    protocol_ids = [p.id for p in challenge.protocols]
    writer.writerow([*BOARD_COLUMNS_BEFORE, *protocol_ids, *BOARD_COLUMNS_AFTER])
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
