"""Control characters are refused at the door, once, with one stable code: ``invalid_characters``.

NUL is the dangerous one: PostgreSQL refuses it in text (a psycopg DataError,
which used to surface as a 500), and the others (escape sequences, newlines,
C1 controls) end up on the web page, in CSV files and in terminals. Lone
surrogates, which a JSON ``\\ud800`` escape can carry, cannot be encoded for
the database either. Rather than a check per endpoint, three places see every
input:

- :class:`RefuseControlCharacters`, an ASGI middleware, reads the decoded path,
  every query parameter (names and values) and the ``Authorization`` header
  before any route runs;
- :data:`Printable`, the type of every free-text field of a JSON body;
- the upload's multipart reader (``gateway.uploads``), for form fields and the
  file name, calls :func:`refuse_control_characters`.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import parse_qsl

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import InvalidCharacters, error_body

# Unicode category Cc (C0, DEL, C1) and the surrogates (category Cs).
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Header values are bytes: only the ASCII controls (tab included) count there, since
# bytes 0x80-0x9f are ordinary parts of UTF-8 sequences.
HEADER_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
CHECKED_HEADERS = (b"authorization",)
MESSAGE = "must not contain control characters (NUL, escape, newline, tab...)"


def has_control_characters(text: str) -> bool:
    return CONTROL.search(text) is not None


def refuse_control_characters(text: str, where: str) -> str:
    if has_control_characters(text):
        raise InvalidCharacters(f"{where} {MESSAGE}")
    return text


def _printable(value: str) -> str:
    if has_control_characters(value):
        # A custom type, so the error handler answers with the stable code, not invalid_input.
        raise PydanticCustomError(InvalidCharacters.code, MESSAGE)
    return value


Printable = Annotated[str, AfterValidator(_printable)]


def first_problem(scope: Scope) -> str | None:
    """Where the request carries a control character, or None when it is clean."""
    if has_control_characters(scope.get("path", "")):
        return "the path"
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if has_control_characters(name) or has_control_characters(value):
            return "the query parameter " + repr(CONTROL.sub("?", name))
    for name, value in scope.get("headers", ()):
        if name in CHECKED_HEADERS and HEADER_CONTROL.search(value):
            return f"the {name.decode('latin-1').title()} header"
    return None


class RefuseControlCharacters:
    """Answers 422 ``invalid_characters`` before routing when the path, query or a header we
    read has a control character, so no route, database query or log line ever sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            where = first_problem(scope)
            if where is not None:
                response = JSONResponse(error_body(InvalidCharacters.code, f"{where} {MESSAGE}"),
                                        422)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
