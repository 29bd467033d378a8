"""What every route needs, built once by ``create_app`` and passed in (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from mfr.challenge import Challenge
from mfr.clock import Clock
from mfr.records.boards import Leaderboards
from mfr.records.results import Results
from mfr.storage import ObjectStore


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
