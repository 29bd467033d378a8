"""Domain errors shared by every service and command.

Each error carries a stable ``code`` (what clients and tests match on) and a
message for people. The gRPC interceptor maps the classes to status codes in
one place; the CLI prints ``code: message`` and exits non-zero.
"""

from __future__ import annotations


class MfrError(Exception):
    """Base of every expected failure. ``code`` is stable; the message is for people."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class InvalidInput(MfrError):
    """The caller sent something malformed: a bad id, a broken file, an unknown track.
    gRPC INVALID_ARGUMENT, HTTP 422."""

    code = "invalid_input"


class NotFound(MfrError):
    """The named thing does not exist, or is not the caller's to see.

    Another participant's private submission is NotFound too, never "forbidden":
    the answer must not tell that it exists. gRPC NOT_FOUND, HTTP 404.
    """

    code = "not_found"


class Conflict(MfrError):
    """The request clashes with the current state (cancel a finished submission, record a
    result for one being re-run). gRPC FAILED_PRECONDITION, HTTP 409."""

    code = "conflict"


class PermissionDenied(MfrError):
    """The caller may not do this. gRPC PERMISSION_DENIED, HTTP 403."""

    code = "permission_denied"


class QuotaExceeded(MfrError):
    """A limit was reached; the message says when it resets.

    gRPC RESOURCE_EXHAUSTED (which callers treat as transient), HTTP 429.
    """

    code = "quota_exceeded"


class Unavailable(MfrError):
    """A dependency is down for now (the database, S3, a peer service); retrying later may
    work, and the dispatcher does, with back-off. gRPC UNAVAILABLE, HTTP 503."""

    code = "unavailable"


class GpuUnavailable(Unavailable):
    """Work named a CUDA runtime, and this process has no GPU it can use (no device, no
    driver, or a CUDA provider that does not load): refused, never done on the CPU. The
    platform's failure: no quota spent, retried elsewhere."""

    code = "gpu_unavailable"
