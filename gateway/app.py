"""The participants' HTTP API (FastAPI), built by ``create_app`` from its dependencies.

Routes live in ``gateway/api/`` (one module per resource); the web leaderboard
is static HTML/JS/CSS in ``gateway/web/`` reading the same JSON API. The
OpenAPI document is at ``/openapi.json`` (browsable at ``/docs``).
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import FileResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import ConnectionPool

from gateway import errors
from gateway.api import admin, participants, public, submissions
from gateway.context import Context
from mfr.challenge import Challenge, load_challenge
from mfr.clock import Clock, system_clock
from mfr.db.pool import ping
from mfr.storage import ObjectStore

DESCRIPTION = """Participants' API of the MFR platform.

Authenticate with `Authorization: Bearer TOKEN`, the token `POST /v1/participants`
returned once. Errors are `{"error": {"code", "message", ...}}`; rates are
fractions in [0, 1] (percentages are for display only).
"""


def web_dir() -> str:
    return str(resources.files("gateway").joinpath("web"))


def create_app(pool: ConnectionPool, store: ObjectStore | None = None,
               challenge: Challenge | None = None, clock: Clock | None = None,
               admin_token: str = "") -> FastAPI:
    app = FastAPI(title="MFR gateway", version="1", description=DESCRIPTION)
    challenge = challenge or load_challenge()
    app.state.context = Context.build(pool, store, challenge, clock or system_clock,
                                      admin_token)
    errors.install(app)
    for module in (participants, submissions, public, admin):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=web_dir()), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(f"{web_dir()}/index.html", media_type="text/html")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        ping(pool)
        return {"status": "SERVING"}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
