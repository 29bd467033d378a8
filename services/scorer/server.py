"""Wiring of the scorer API: database pool, object store, servicer; ready when both answer."""

from __future__ import annotations

from mfr.db.pool import ping, pool_from_settings
from mfr.rpc.service import ServiceParts, serve
from mfr.scorer.v1 import scorer_pb2_grpc
from mfr.settings import ServiceSettings
from mfr.storage import ObjectStore


def build(settings: ServiceSettings) -> ServiceParts:
    pool = pool_from_settings(name="scorer")
    pool.open(wait=False)
    store = ObjectStore.from_settings()
    # The job API lands with distributed scoring (issue 6); until then every RPC
    # answers UNIMPLEMENTED from the generated base class.
    servicer = scorer_pb2_grpc.ScorerServiceServicer()
    return ServiceParts(
        servicers=[(scorer_pb2_grpc.add_ScorerServiceServicer_to_server, servicer,
                    "mfr.scorer.v1.ScorerService")],
        ready=lambda: ping(pool) and store.ready(),
        on_stop=pool.close,
    )


def main() -> None:
    serve("scorer", build)
