"""Wiring of the ranker: challenge, database pool, servicer; ready = database reachable."""

from __future__ import annotations

import os

from mfr.db.pool import ping, pool_from_settings
from mfr.ranker.v1 import ranker_pb2_grpc
from mfr.rpc.service import ServiceParts, serve
from mfr.settings import ServiceSettings
from mfr.ranking.board import Leaderboards
from mfr.records.results import Results
from services.ranker.servicer import RankerServicer
from services.ranker.serving import serving_challenge
from services.ranker.watch import BoardWatcher


def build(settings: ServiceSettings) -> ServiceParts:
    challenge, _ = serving_challenge()
    pool = pool_from_settings(name="ranker")
    pool.open(wait=False)
    boards = Leaderboards(pool, challenge)
    servicer = RankerServicer(pool, boards, Results(pool, challenge, boards), BoardWatcher(boards),
                              admin_token=os.environ.get("MFR_ADMIN_TOKEN", ""))
    return ServiceParts(
        servicers=[(ranker_pb2_grpc.add_RankerServiceServicer_to_server, servicer,
                    "mfr.ranker.v1.RankerService")],
        ready=lambda: ping(pool),
        on_stop=pool.close,
    )


def main() -> None:
    serve("ranker", build)
