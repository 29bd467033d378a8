"""HTTP errors: every failure is ``{"error": {"code", "message", ...}}`` with a fitting status.

Domain errors (:mod:`mfr.errors`) map to statuses in one place, like the gRPC
interceptor does for the services; unexpected exceptions become a 500 that
names the request id and nothing else (:func:`crashed`, answered by the request-id
middleware, gateway/request_ids.py). Every status a route can answer is
declared in the OpenAPI document with :class:`ErrorBody` (:func:`documented`).
"""

from __future__ import annotations

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import compile_path

from mfr import errors
from mfr.logs import get_logger

log = get_logger("gateway")

HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"}
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


class InvalidCharacters(errors.InvalidInput):
    """A control character (NUL, escape, newline...) in the path, query, a field or a file name (422)."""

    code = "invalid_characters"


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


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str = Field(description="Stable, for programs: e.g. `invalid_characters`, "
                                  "`unknown_track`, `quota_exceeded`.")
    message: str = Field(description="For people; may change.")


class ErrorBody(BaseModel):
    """Every error answer; some codes add fields (``problems``, ``errors``, ``resets_at``)."""

    error: ErrorDetail


WHEN = {
    401: "No bearer token, or one nobody was given (`unauthorized`).",
    403: "Not allowed: not the organisers' token, or outside the submission window.",
    404: "No such submission (or another participant's private one).",
    409: "The request conflicts with the current state (e.g. a submission not scored or a "
         "frozen board for Set Public, a state that allows no re-run or cancel).",
    413: "The upload is larger than the track allows (`too_large`).",
    422: "Invalid input (`invalid_input`, `unknown_track`, `form_invalid`, a zip finding...), "
         "or a control character in the path, query, a field or a file name "
         "(`invalid_characters`).",
    429: "A daily limit is reached (`daily_limit`, `rejected_limit`); `resets_at` says when "
         "it resets.",
    503: "The database is unreachable for now; retry later (`unavailable`).",
}


def documented(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` for these error statuses, each with the error body's schema."""
    return {status: {"model": ErrorBody, "description": WHEN[status]} for status in statuses}


def allowed_methods(request: Request, allow: str) -> str:
    """``Allow`` for a 405 (RFC 9110): every method at this path. Starlette names only the
    first matching route's (``allow``), and FastAPI has a route per path and method, so the
    OpenAPI document's operations at every matching path template are added."""
    methods = {m.strip().upper() for m in allow.split(",") if m.strip()}
    for template, operations in request.app.openapi().get("paths", {}).items():
        regex, _, _ = compile_path(template)
        if regex.match(request.url.path):
            methods |= {m.upper() for m in operations if m.upper() in HTTP_METHODS}
    return ", ".join(sorted(methods))


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
        hostile = any(e["type"] == InvalidCharacters.code for e in exc.errors())
        code = InvalidCharacters.code if hostile else "invalid_input"
        return JSONResponse(error_body(code, message, problems=problems), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's "error parsing the body" (not JSON, not UTF-8): invalid input like any other.
            return JSONResponse(error_body("invalid_input", f"the body: {exc.detail}"), 422)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request, headers.pop("Allow", ""))
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client dropped the connection mid-upload (the upload is already aborted and
        # discarded): an everyday event, not a crash. Nobody reads this answer.
        log.info("client disconnected mid-request", path=request.url.path)
        return JSONResponse(error_body("form_invalid", "the body ended early: the client "
                                                       "disconnected"), 422)

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable", path=request.url.path, error=str(exc))
        return JSONResponse(error_body("unavailable", "the database is unreachable; retry later"),
                            503, headers={"Retry-After": "5"})


def crashed(request_id: str, path: str, exc: BaseException, answered: bool = False) -> JSONResponse:
    """The 500 of an unexpected exception: the traceback goes to the log, the caller learns
    the request id and nothing else. ``answered``: the response had begun (nothing can be
    sent; the line says so)."""
    log.error("request crashed", path=path, request_id=request_id, answered=answered,
              exc_info=exc)
    return JSONResponse(error_body("internal", f"internal error (request id {request_id})"), 500)
