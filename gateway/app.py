"""The participants' HTTP API (FastAPI): built by ``create_app`` with its dependencies."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import ConnectionPool

from mfr.db.pool import ping


def create_app(pool: ConnectionPool) -> FastAPI:
    app = FastAPI(title="MFR gateway", version="1", description="Participants' API of the MFR platform.")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        ping(pool)
        return {"status": "SERVING"}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
