"""HTTP errors: every failure is ``{"error": {"code", "message", ...}}`` with a fitting status.

Domain errors (:mod:`mfr.errors`) map to statuses in one place, like the gRPC
interceptor does for the services; unexpected exceptions become a 500 that
names a request id and nothing else.
"""

from __future__ import annotations

import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mfr import errors
from mfr.logs import get_logger

log = get_logger("gateway")

STATUS_OF: list[tuple[type[errors.MfrError], int]] = [
    (errors.InvalidInput, 422),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.PermissionDenied, 403),
    (errors.QuotaExceeded, 429),
    (errors.Unavailable, 503),
]


class Unauthorized(errors.MfrError):
    """No or an unknown bearer token (401)."""

    code = "unauthorized"


class TooLarge(errors.MfrError):
    """The upload exceeds the track's limit (413)."""

    code = "too_large"


class WindowClosed(errors.PermissionDenied):
    """Outside the submission window (403)."""

    code = "window_closed"


class HttpError(errors.MfrError):
    """An error with extra fields for the body and headers (e.g. 429's resets_at)."""

    def __init__(self, status: int, code: str, message: str, extra: dict | None = None,
                 headers: dict | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.extra = extra or {}
        self.headers = headers or {}


def status_for(exc: errors.MfrError) -> int:
    if isinstance(exc, HttpError):
        return exc.status
    if isinstance(exc, Unauthorized):
        return 401
    if isinstance(exc, TooLarge):
        return 413
    for cls, status in STATUS_OF:
        if isinstance(exc, cls):
            return status
    return 400


def error_body(code: str, message: str, **extra: object) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.MfrError)
    async def _domain(request: Request, exc: errors.MfrError) -> JSONResponse:
        extra = exc.extra if isinstance(exc, HttpError) else {}
        headers = exc.headers if isinstance(exc, HttpError) else {}
        if isinstance(exc, Unauthorized):
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(error_body(exc.code, exc.message, **extra), status_for(exc),
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"where": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                    for e in exc.errors()]
        message = "; ".join(f"{p['where']}: {p['message']}" for p in problems)
        return JSONResponse(error_body("invalid_input", message, problems=problems), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        request_id = uuid.uuid4().hex[:16]
        log.error("request crashed", path=request.url.path, request_id=request_id, exc_info=exc)
        return JSONResponse(error_body("internal", f"internal error (request id {request_id})"),
                            500)
