"""Structured logging: JSON lines for services, readable lines for people.

structlog renders; the standard ``logging`` module (used by grpc, uvicorn,
minio) is routed through the same renderer so every line has one shape.

One trail per submission: the id of the request that uploaded it (``request_id``,
docs/operations.md "Following one submission") is bound to the log context
(structlog contextvars) wherever work is done for it: the gateway per HTTP
request, the dispatcher per claim, the gRPC interceptor per call, the queue worker
per task. :func:`current_request_id` is what the gRPC clients and the task deferrer
forward.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid

import structlog

REQUEST_ID = "request_id"
# A caller's id is kept only when it is safe in a log line, a header and a shell's grep:
# short, letters, digits and ``. _ : -``, not starting with a dash (grep would read an
# option). Anything else is replaced, never cleaned up: a replaced id is an honest one.
WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# W3C Trace Context: version-traceid-parentid-flags; version ff is invalid, and a future
# version may append fields (hence the optional tail, allowed for versions after 00 only).
TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?")


def configure_logging(fmt: str = "json", level: str = "INFO", service: str | None = None) -> None:
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared = [
        structlog.contextvars.merge_contextvars,
        _service_name(service),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
    ]
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level.upper() != "DEBUG":  # the task queue logs a line or two per deferral and per task
        logging.getLogger("procrastinate").setLevel(logging.WARNING)


def _service_name(service: str | None):
    """A processor naming the process on every line. Not a context variable: a thread's
    context starts empty, and most lines come from threads (gRPC handlers, uvicorn, tasks)."""

    def add(_logger, _method: str, event_dict: dict) -> dict:
        if service:
            event_dict.setdefault("service", service)
        return event_dict

    return add


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)


def new_request_id() -> str:
    """32 hex digits: unique, and of the shape of a W3C trace id."""
    return uuid.uuid4().hex


def well_formed(value: str | None) -> str | None:
    """``value`` when it is a request id we may log and forward as it is, else None."""
    return value if value is not None and WELL_FORMED.fullmatch(value) else None


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a valid W3C ``traceparent`` header (so a caller that traces finds our
    lines under its own trace id), else None."""
    found = TRACEPARENT.fullmatch(traceparent.strip()) if traceparent else None
    if found is None:
        return None
    version, trace, parent, tail = found.groups()
    if version == "ff" or (version == "00" and tail) or trace == "0" * 32 or parent == "0" * 16:
        return None
    return trace


def request_id_from(x_request_id: str | None, traceparent: str | None = None) -> str:
    """The id a request goes by: the caller's ``x-request-id`` when well formed, else the
    trace id of its ``traceparent``, else a new one."""
    return well_formed(x_request_id) or trace_id(traceparent) or new_request_id()


def current_request_id() -> str | None:
    """The request id bound to this thread's (or task's) log context, if any."""
    value = structlog.contextvars.get_contextvars().get(REQUEST_ID)
    return value if isinstance(value, str) else None
