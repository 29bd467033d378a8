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
    """The caller sent something malformed (INVALID_ARGUMENT)."""

    code = "invalid_input"


class NotFound(MfrError):
    """The named thing does not exist, or is not the caller's to see (NOT_FOUND)."""

    code = "not_found"


class Conflict(MfrError):
    """The request clashes with the current state (FAILED_PRECONDITION)."""

    code = "conflict"


class PermissionDenied(MfrError):
    """The caller may not do this (PERMISSION_DENIED)."""

    code = "permission_denied"


class QuotaExceeded(MfrError):
    """A limit was reached (RESOURCE_EXHAUSTED)."""

    code = "quota_exceeded"


class Unavailable(MfrError):
    """A dependency is down for now; retrying later may work (UNAVAILABLE)."""

    code = "unavailable"
