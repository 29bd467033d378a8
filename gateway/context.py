"""What every route needs, built once by ``create_app`` and passed in (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from gateway.clock import Clock
from mfr.challenge import Challenge
from mfr.storage import ObjectStore
from mfr.ranking.board import Leaderboards
from mfr.records.results import Results


@dataclass
class Context:
    pool: ConnectionPool
    store: ObjectStore
    challenge: Challenge
    clock: Clock
    admin_token: str
    boards: Leaderboards
    results: Results

    @classmethod
    def build(cls, pool: ConnectionPool, store: ObjectStore, challenge: Challenge, clock: Clock,
              admin_token: str) -> Context:
        boards = Leaderboards(pool, challenge, clock)
        return cls(pool, store, challenge, clock, admin_token, boards,
                   Results(pool, challenge, boards))
