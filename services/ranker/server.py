"""Wiring of the ranker: database pool, servicer, readiness = database reachable."""

from __future__ import annotations

from mfr.db.pool import ping, pool_from_settings
from mfr.ranker.v1 import ranker_pb2_grpc
from mfr.rpc.service import ServiceParts, serve
from mfr.settings import ServiceSettings


def build(settings: ServiceSettings) -> ServiceParts:
    pool = pool_from_settings(name="ranker")
    pool.open(wait=False)
    # The leaderboard logic lands with the participant journey (issue 7); until
    # then every RPC answers UNIMPLEMENTED from the generated base class.
    servicer = ranker_pb2_grpc.RankerServiceServicer()
    return ServiceParts(
        servicers=[(ranker_pb2_grpc.add_RankerServiceServicer_to_server, servicer,
                    "mfr.ranker.v1.RankerService")],
        ready=lambda: ping(pool),
        on_stop=pool.close,
    )


def main() -> None:
    serve("ranker", build)
