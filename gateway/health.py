"""The gateway's health over HTTP: ``/healthz`` (readiness) and ``/livez`` (liveness).

``/healthz`` answers 200 ``{"status": "SERVING"}`` while PostgreSQL and S3
answer, else 503 ``{"status": "NOT_SERVING", "failing": {"postgres": why}}``;
it reuses a verdict under a second old (the process runner re-checks every
second) and otherwise checks afresh, within ``mfr.health``'s bound: it never
hangs on a dead server. ``/livez`` answers 200 while the process serves HTTP
at all: Kubernetes restarts on liveness, and a database outage is no reason to
restart the gateway.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool

from mfr.db.pool import ping
from mfr.health import Readiness
from mfr.storage import ObjectStore


def gateway_readiness(pool: ConnectionPool, store: ObjectStore | None) -> Readiness:
    checks = {"postgres": lambda: ping(pool)}
    if store is not None:
        checks["s3"] = store.ready
    return Readiness(checks)


def install(app: FastAPI, readiness: Readiness) -> None:
    """Add the two endpoints; ``app.state.readiness`` is what the process runner watches."""
    app.state.readiness = readiness
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    def healthz() -> JSONResponse:
        verdict = readiness.latest(max_age_s=1.0)
        if verdict.ready:
            return JSONResponse({"status": "SERVING"})
        return JSONResponse({"status": "NOT_SERVING", "failing": verdict.failing},
                            status_code=503)

    @router.get("/livez")
    def livez() -> dict:
        return {"status": "SERVING"}

    app.include_router(router)
