"""One interceptor for every service: request ids, logs, metrics, error mapping.

Domain errors (:class:`mfr.errors.MfrError`) become their status code with the
error's message and stable code in trailing metadata (``mfr-error-code``);
anything else becomes INTERNAL with a generic message and the request id, so
internals never leak to callers while the log keeps the traceback.

The request id is the caller's ``x-request-id`` (the dispatcher forwards the id of
the upload it works for: :mod:`mfr.rpc.calls`), else a W3C ``traceparent``'s trace
id, else a new one. It is bound to the log context while the handler runs, so every
line the handler writes, and every call or task it makes, carries it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import Counter, Histogram
from structlog.contextvars import bound_contextvars

from mfr import errors
from mfr.logs import get_logger, request_id_from
from mfr.rpc.auth import Unauthenticated

log = get_logger("mfr.rpc")

STATUS_OF: list[tuple[type[errors.MfrError], grpc.StatusCode]] = [
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),  # no service token (mfr/rpc/auth.py)
]

REQUESTS = Counter("mfr_grpc_requests_total", "gRPC requests handled", ["method", "code"])
LATENCY = Histogram(
    "mfr_grpc_request_seconds",
    "gRPC request latency (streams: until the stream ends)",
    ["method"],
    buckets=(0.005, 0.02, 0.1, 0.5, 2, 10, 60, 300, 1800),
)

REQUEST_ID_KEY = "x-request-id"
TRACEPARENT_KEY = "traceparent"
ERROR_CODE_KEY = "mfr-error-code"


def status_for(exc: BaseException) -> grpc.StatusCode:
    for cls, code in STATUS_OF:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL if not isinstance(exc, errors.MfrError) else grpc.StatusCode.UNKNOWN


class ServiceInterceptor(grpc.ServerInterceptor):
    """Wraps every handler: request id, structured log line, metrics, error mapping."""

    def intercept_service(self, continuation: Callable, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        metadata = dict(handler_call_details.invocation_metadata or ())
        request_id = request_id_from(metadata.get(REQUEST_ID_KEY), metadata.get(TRACEPARENT_KEY))
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method, request_id),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method, request_id),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client-streaming methods: none in our contracts

    def _unary(self, behaviour: Callable, method: str, request_id: str) -> Callable:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            try:
                with bound_contextvars(request_id=request_id):
                    response = behaviour(request, context)
            except Exception as exc:  # noqa: BLE001 - mapped below, never re-raised raw
                _abort(context, exc, method, request_id, start)
            _done(method, "OK", request_id, start)
            return response

        return wrapper

    def _stream(self, behaviour: Callable, method: str, request_id: str) -> Callable:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            start = time.perf_counter()
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            try:
                yield from _bound_steps(behaviour(request, context), request_id)
            except Exception as exc:  # noqa: BLE001
                _abort(context, exc, method, request_id, start)
            _done(method, "OK", request_id, start)

        return wrapper


def _bound_steps(responses: Iterator[Any], request_id: str) -> Iterator[Any]:
    """``responses``, each step of the handler run with the request id bound. Bound per
    step, not around the ``yield``: a stream cut short is closed wherever gRPC drops it,
    and a binding must be undone in the context that made it."""
    responses = iter(responses)
    try:
        while True:
            with bound_contextvars(request_id=request_id):
                try:
                    response = next(responses)
                except StopIteration:
                    return
            yield response
    finally:  # as ``yield from`` would: a stream cut short closes the handler's generator
        close = getattr(responses, "close", None)
        if close is not None:
            with bound_contextvars(request_id=request_id):
                close()


def _done(method: str, code: str, request_id: str, start: float) -> None:
    seconds = time.perf_counter() - start
    REQUESTS.labels(method, code).inc()
    LATENCY.labels(method).observe(seconds)
    log.info("rpc", method=method, code=code, request_id=request_id, ms=round(seconds * 1e3, 2))


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str, request_id: str,
           start: float) -> None:
    if isinstance(exc, grpc.RpcError) and context.code() not in (None, grpc.StatusCode.OK):
        raise exc  # the servicer already aborted with a status of its own
    code = status_for(exc)
    if isinstance(exc, errors.MfrError):
        message = exc.message
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id), (ERROR_CODE_KEY, exc.code)))
        log.warning("rpc failed", method=method, code=code.name, error_code=exc.code,
                    request_id=request_id, error=message)
    else:
        message = f"internal error (request id {request_id})"
        log.error("rpc crashed", method=method, request_id=request_id, exc_info=exc)
    _done(method, code.name, request_id, start)
    context.abort(code, message)


def error_code_of(err: grpc.RpcError) -> str | None:
    """The stable ``mfr-error-code`` a service attached to a failed call, if any."""
    for key, value in err.trailing_metadata() or ():
        if key == ERROR_CODE_KEY:
            return value
    return None
