"""Calling another service: a failed call becomes a domain error, a call in flight can be cut.

Every client call goes through :func:`unary` or :func:`stream`: the gRPC status
and the ``mfr-error-code`` trailer become a :class:`RemoteError` (transient or
not, for the caller's retry policy), and the call is listed in ``inflight``
while it runs, so that whoever owns the work (the dispatcher's claim) can
cancel it at once when the work is taken away. Each call carries the request id
of the caller's log context as ``x-request-id`` (:func:`traced`), so the service
logs the submission's id on its lines (:mod:`mfr.rpc.interceptors`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

from mfr.errors import MfrError
from mfr.logs import current_request_id
from mfr.rpc.interceptors import REQUEST_ID_KEY, error_code_of

# Statuses a later attempt may not see again: the peer is down, slow or busy, or it does
# not take our service token yet (a rotation rolling out; never the participant's fault).
TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED}


class RemoteError(MfrError):
    """A peer service refused or failed a call. ``code`` is the peer's stable code (or the
    status in lower case); ``transient`` says whether trying again later may help."""

    def __init__(self, service: str, status: str, code: str, details: str,
                 transient: bool) -> None:
        super().__init__(f"the {service} failed ({status.lower()}): {details or 'no details'}",
                         code=code)
        self.service = service
        self.status = status
        self.transient = transient


class CallCancelled(MfrError):
    """The call was cut by its owner (:meth:`Inflight.cancel_all`)."""

    code = "call_cancelled"


class Inflight:
    """Calls in flight for one piece of work; ``cancel_all`` cuts them and any later one."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.cancelled = False

    def add(self, call: Any) -> None:
        """List a call just started; cut it at once when ``cancel_all`` ran after the caller's
        check and before this (it would otherwise run to its timeout)."""
        self.calls.append(call)
        if self.cancelled:
            call.cancel()

    def cancel_all(self) -> None:
        self.cancelled = True
        for call in list(self.calls):
            call.cancel()


def _translate(err: grpc.RpcError, service: str, inflight: Inflight | None) -> MfrError:
    if inflight is not None and inflight.cancelled:
        return CallCancelled(f"the call to the {service} was cut")
    status = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
    code = (error_code_of(err) if hasattr(err, "trailing_metadata") else None) or status.name.lower()
    details = err.details() if callable(getattr(err, "details", None)) else str(err)
    return RemoteError(service, status.name, code, details or "", status in TRANSIENT)


def traced(metadata: tuple = ()) -> tuple:
    """``metadata`` plus the current request id (unless the caller set one)."""
    request_id = current_request_id()
    if request_id is None or any(key == REQUEST_ID_KEY for key, _ in metadata):
        return tuple(metadata)
    return (*metadata, (REQUEST_ID_KEY, request_id))


def unary(service: str, method: Callable, request: Any, *, timeout: float,
          inflight: Inflight | None = None, metadata: tuple = ()) -> Any:
    """One unary call; cancellable through ``inflight``."""
    if inflight is not None and inflight.cancelled:
        raise CallCancelled(f"the call to the {service} was cut")
    future = method.future(request, timeout=timeout, metadata=traced(metadata))
    if inflight is not None:
        inflight.add(future)
    try:
        return future.result()
    except grpc.FutureCancelledError:
        raise CallCancelled(f"the call to the {service} was cut") from None
    except grpc.RpcError as err:
        raise _translate(err, service, inflight) from None
    finally:
        if inflight is not None:
            inflight.calls.remove(future)


def stream(service: str, method: Callable, request: Any, *, timeout: float | None = None,
           inflight: Inflight | None = None) -> Iterator[Any]:
    """The messages of a server stream; cancellable through ``inflight``."""
    if inflight is not None and inflight.cancelled:
        raise CallCancelled(f"the call to the {service} was cut")
    call = method(request, timeout=timeout, metadata=traced())
    if inflight is not None:
        inflight.add(call)
    try:
        yield from call
    except grpc.RpcError as err:
        raise _translate(err, service, inflight) from None
    finally:
        if inflight is not None:
            inflight.calls.remove(call)
        call.cancel()
