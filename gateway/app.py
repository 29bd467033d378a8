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

from gateway import errors, health
from gateway.api import admin, participants, public, submissions
from gateway.characters import RefuseControlCharacters
from gateway.context import Context
from gateway.request_ids import RequestIds
from mfr.challenge import Challenge, load_challenge
from mfr.clock import Clock, system_clock
from mfr.storage import ObjectStore

DESCRIPTION = """Participants' API of the MFR platform.

Authenticate with `Authorization: Bearer TOKEN`, the token `POST /v1/participants`
returned once. Errors are `{"error": {"code", "message", ...}}` with a stable
`code`; every status an operation can answer is listed with it. A control
character (NUL, escape, newline...) in the path, a query parameter, a field or
a file name is refused with 422 `invalid_characters`. Rates are fractions in
[0, 1] (percentages are for display only).

Every answer, errors included, carries `X-Request-Id`: yours if you sent a
well-formed one (at most 128 letters, digits and `. _ : -`, not starting with
`-`), else the trace id of a valid W3C `traceparent`, else a new one. An upload's
id stays with the submission (`request_id` in its detail): quote it when you ask
the organisers about it.
"""


def web_dir() -> str:
    return str(resources.files("gateway").joinpath("web"))


def create_app(pool: ConnectionPool, store: ObjectStore | None = None,
               challenge: Challenge | None = None, clock: Clock | None = None,
               admin_token: str = "") -> FastAPI:
    # 422 and 503 on every route: any path or query may carry a control character, and any
    # route that reads the database answers 503 while it is unreachable.
    app = FastAPI(title="MFR gateway", version="1", description=DESCRIPTION,
                  responses=errors.documented(422, 503))
    challenge = challenge or load_challenge()
    app.state.context = Context.build(pool, store, challenge, clock or system_clock,
                                      admin_token)
    errors.install(app)
    app.add_middleware(RefuseControlCharacters)
    app.add_middleware(RequestIds)  # added last: the outermost, so every answer has the id
    for module in (participants, submissions, public, admin):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=web_dir()), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(f"{web_dir()}/index.html", media_type="text/html")

    health.install(app, health.gateway_readiness(pool, store))

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
