"""Wiring of the ranker: challenge, database pool, servicer; ready = database reachable.

Its reads are public: external tools call them without the service token (which never
leaves the platform); the servicer shows them public data only unless they present the
organisers' token.
"""

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

#: What external tools may call without the service token. Named one by one rather than
#: "all of RankerService", so that a method added later (a write, say) stays behind the
#: token until someone decides it is a public read.
PUBLIC_METHODS = frozenset(f"/mfr.ranker.v1.RankerService/{method}" for method in (
    "GetLeaderboard", "WatchLeaderboard", "GetSubmission", "ListSubmissions"))


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
        public_methods=PUBLIC_METHODS,
    )


def main() -> None:
    serve("ranker", RankerSettings, build)
