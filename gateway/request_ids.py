"""Every HTTP answer names its request: ``X-Request-Id``, the one id an operator greps.

The id is the caller's own ``X-Request-Id`` when it is well formed (at most 128
letters, digits and ``. _ : -``: :func:`mfr.logs.well_formed`), else the trace id of
a valid W3C ``traceparent``, else a new one; a malformed id is replaced, never
echoed. While the request is served it is bound to the log context (every line the
gateway writes for it carries ``request_id``, uvicorn's access line included) and
kept in ``request.state.request_id``; an upload stores it with the submission, so
the dispatcher and every service after it log the same id (docs/operations.md,
"Following one submission").

This middleware is the outermost of ours, and it is where an unexpected exception
becomes the 500 (:func:`gateway.errors.crashed`): inside the id's log context and
with the header, which Starlette's own last-resort handler, outside every
middleware, could give neither.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bound_contextvars

from gateway.errors import crashed
from mfr.logs import REQUEST_ID, request_id_from

HEADER = "X-Request-Id"


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = request_id_from(headers.get(HEADER), headers.get("traceparent"))
        scope.setdefault("state", {})[REQUEST_ID] = request_id
        started = False

        async def send_named(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        with bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_named)
            except Exception as exc:
                answer = crashed(request_id, scope.get("path", ""), exc, answered=started)
                if started:  # half an answer is out: only the server can end the connection
                    raise
                await answer(scope, receive, send_named)
