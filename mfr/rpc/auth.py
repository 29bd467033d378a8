"""The service token: internal gRPC calls carry it, every gRPC server checks it.

One shared secret (``MFR_SERVICE_TOKEN``) in the ``mfr-service-token`` metadata
of every call, checked in constant time before the servicer runs. A call
without it, or with another, is refused with UNAUTHENTICATED and the stable
code ``unauthenticated``. The standard health and reflection services stay
open: kubelet probes, ``grpc_health_probe`` and ``mfr up`` cannot send a token,
and they reveal no data. So do the methods a server declares public (``public_methods``:
the ranker's reads, for external tools, which must never hold the token). Why a token
rather than mTLS: docs/architecture.md, "Internal calls are authenticated".

The organisers' token (``authorization: Bearer ...``: the ranker's private reads) is
another matter and is checked on top of this one, by the ranker.
"""

from __future__ import annotations

import hmac
from collections import namedtuple
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from mfr.errors import MfrError

TOKEN_KEY = "mfr-service-token"

#: Services any caller may use: health (probes) and reflection (grpcurl, debugging).
OPEN_SERVICES = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})


class Unauthenticated(MfrError):
    """The call does not carry the platform's service token. gRPC UNAUTHENTICATED."""

    code = "unauthenticated"


def _service_of(method: str) -> str:
    """``/pkg.Service/Method`` -> ``pkg.Service``."""
    return method.lstrip("/").partition("/")[0]


class TokenGuard(grpc.ServerInterceptor):
    """Refuses every call but health, reflection and the server's public methods unless it
    carries the service token.

    A refused call runs a stand-in handler that raises :class:`Unauthenticated`, so the
    platform's interceptor (outside this one) logs, counts and maps it like any domain
    error: UNAUTHENTICATED, ``mfr-error-code: unauthenticated``, the request id.
    """

    def __init__(self, service_token: str, public_methods: Iterable[str] = ()) -> None:
        if not service_token:
            raise ValueError("a gRPC server needs a service token (MFR_SERVICE_TOKEN)")
        self._token = service_token.encode("utf-8")
        #: Full names (``/pkg.Service/Method``), matched exactly: a method added to a
        #: public service later stays closed until someone declares it. (GrpcServer checks
        #: that each is a method it serves.)
        self.public_methods = frozenset(public_methods)

    def allows(self, handler_call_details: Any) -> bool:
        method = handler_call_details.method
        if _service_of(method) in OPEN_SERVICES or method in self.public_methods:
            return True
        presented = [value for key, value in handler_call_details.invocation_metadata or ()
                     if key == TOKEN_KEY]
        return len(presented) == 1 and isinstance(presented[0], str) and \
            hmac.compare_digest(presented[0].encode("utf-8"), self._token)

    def intercept_service(self, continuation: Callable, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or self.allows(handler_call_details):
            return handler
        return _refusing(handler)


def _refuse(_request: Any, _context: grpc.ServicerContext) -> Any:
    raise Unauthenticated(f"this call needs the platform's service token ({TOKEN_KEY} "
                          "metadata, MFR_SERVICE_TOKEN)")


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` (so the request still deserialises) that
    refuses the call instead of running it. (Client-streaming kinds, which the platform's
    interceptor does not wrap, end UNKNOWN instead: refused all the same, and no contract
    has one outside reflection, which is open.)"""
    kinds = [(handler.unary_unary, grpc.unary_unary_rpc_method_handler),
             (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
             (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
             (handler.stream_stream, grpc.stream_stream_rpc_method_handler)]
    factory = next(make for behaviour, make in kinds if behaviour is not None)
    return factory(_refuse, request_deserializer=handler.request_deserializer,
                   response_serializer=handler.response_serializer)


class _AttachToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the service token to every call's metadata (keeping the caller's own)."""

    def __init__(self, service_token: str) -> None:
        self._pair = (TOKEN_KEY, service_token)

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [(k, v) for k, v in details.metadata or () if k != TOKEN_KEY]
        return _CallDetails(details.method, details.timeout, [*metadata, self._pair],
                            details.credentials, details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._with_token(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._with_token(client_call_details), request_iterator)


class _CallDetails(namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                                "wait_for_ready", "compression")),
                   grpc.ClientCallDetails):
    """A call's details with other metadata (grpc's own idiom for client interceptors)."""


def with_service_token(channel: grpc.Channel, service_token: str) -> grpc.Channel:
    """``channel`` whose every call carries the service token."""
    if not service_token:
        raise ValueError("calling a service needs the service token (MFR_SERVICE_TOKEN)")
    return grpc.intercept_channel(channel, _AttachToken(service_token))
