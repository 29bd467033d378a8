"""Wiring of the gateway: settings, database pool, object store, challenge, uvicorn.

The same start-up shape as every process (``mfr.rpc.process``): uvicorn runs as
the process's background part, without a gRPC port; health is HTTP
(``/healthz`` readiness, ``/livez`` liveness: gateway/health.py), and SIGTERM
lets requests in flight finish within the grace.
"""

from __future__ import annotations

import threading

import uvicorn

from gateway.app import create_app
from gateway.config import GatewaySettings
from mfr.challenge import load_challenge
from mfr.db.pool import open_pool
from mfr.rpc.process import Process, serve
from mfr.storage import ObjectStore


class HttpServer:
    """uvicorn on a thread of its own (it installs no signal handlers off the main thread)."""

    def __init__(self, app, settings: GatewaySettings) -> None:
        config = uvicorn.Config(app, host=settings.host, port=settings.gateway_port,
                                log_config=None,
                                timeout_graceful_shutdown=int(settings.shutdown_grace_s))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, grace: float) -> None:
        self.server.should_exit = True
        self.thread.join(grace + 5)

    def alive(self) -> bool:
        return self.thread.is_alive()


def build(settings: GatewaySettings) -> Process:
    pool = open_pool(settings, "gateway")
    app = create_app(pool, ObjectStore.from_settings(settings), load_challenge(settings.challenge),
                     clock=settings.clock(), admin_token=settings.admin_token.get_secret_value())
    # The same checks /healthz answers with: the runner re-runs them every second and logs
    # each change; uvicorn starts at once (grpc=False), so /healthz answers 503 meanwhile.
    return Process(ready=app.state.readiness, background=[HttpServer(app, settings)],
                   on_stop=pool.close, grpc=False)


def main() -> None:
    serve("gateway", GatewaySettings, build)
