"""Wiring of the dispatcher: database pool, peers, the dispatch loop, the closer; gRPC
health only.

Ready (SERVING) once the database answers; then the dispatch threads start, and the
closer that freezes the boards once the window closed (services/dispatcher/closer.py).
"""

from __future__ import annotations

import os
import socket

from mfr.challenge import served_challenge
from mfr.db.pool import open_pool, ping
from mfr.health import Readiness
from mfr.logs import get_logger
from mfr.records.boards import Leaderboards
from mfr.records.leases import Leases
from mfr.rpc.client import channel
from mfr.rpc.peers import Peers
from mfr.rpc.process import Process, serve
from mfr.storage import ObjectStore
from services.dispatcher.closer import Closer
from services.dispatcher.config import DispatcherSettings
from services.dispatcher.dispatcher import Dispatcher
from services.dispatcher.stages import StageContext, Stages

log = get_logger("services.dispatcher")
PEERS = ("validator", "embedder", "scorer")


def build(settings: DispatcherSettings) -> Process:
    challenge, challenge_toml = served_challenge(settings.challenge)
    testset_id = settings.served_testset_id()
    if not testset_id:
        log.warning("no test set: set MFR_TESTSET (a test-set folder) or MFR_TESTSET_ID")
    token = settings.service_token.get_secret_value()
    channels = {name: channel(getattr(settings, f"{name}_addr"), token) for name in PEERS}
    pool = open_pool(settings, "dispatcher")
    leases = Leases(pool, f"{socket.gethostname()}:{os.getpid()}", settings.dispatch_lease_s)
    peers = Peers.connect(channels)
    stages = Stages(StageContext(leases, ObjectStore.from_settings(settings), peers, challenge,
                                 challenge_toml, testset_id, settings.dispatch_validate_timeout_s))

    def close() -> None:
        for ch in channels.values():
            ch.close()
        pool.close()

    return Process(ready=Readiness({"postgres": lambda: ping(pool)}),
                   background=[Dispatcher(leases, stages, settings),
                               Closer(Leaderboards(pool, challenge))],
                   on_stop=close)


def main() -> None:
    serve("dispatcher", DispatcherSettings, build)
