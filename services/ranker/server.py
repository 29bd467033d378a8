"""Wiring of the ranker: challenge, database pool, servicer; ready = database reachable."""

from __future__ import annotations

from mfr.challenge import load_challenge
from mfr.db.pool import open_pool, ping
from mfr.health import Readiness
from mfr.ranker.v1 import ranker_pb2_grpc
from mfr.records.boards import Leaderboards
from mfr.rpc.process import Process, serve
from services.ranker.config import RankerSettings
from services.ranker.servicer import RankerServicer
from services.ranker.watch import BoardWatcher


def build(settings: RankerSettings) -> Process:
    challenge = load_challenge(settings.challenge)
    pool = open_pool(settings, "ranker")
    boards = Leaderboards(pool, challenge)
    servicer = RankerServicer(pool, boards, BoardWatcher(boards),
                              admin_token=settings.admin_token.get_secret_value())
    return Process(
        servicers=[(ranker_pb2_grpc.add_RankerServiceServicer_to_server, servicer,
                    "mfr.ranker.v1.RankerService")],
        ready=Readiness({"postgres": lambda: ping(pool)}),
        on_stop=pool.close,
    )


def main() -> None:
    serve("ranker", RankerSettings, build)
