"""The gateway names every answer: ``X-Request-Id`` (the caller's if well formed), and its log
lines for the request carry the same id, the crash line included."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from gateway.app import create_app
from mfr.logs import current_request_id, request_id_from, trace_id, well_formed
from tests.journey_support import ServerThread, make_challenge

NEW_ID = re.compile(r"[0-9a-f]{32}")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize("value", ["req-42", "0f4c2a9e-7d1b-4c1e-9f52-3b2a1c0d9e8f",
                                   "a", "build.17:step_3", "x" * 128])
def test_a_well_formed_id_is_kept(value):
    assert well_formed(value) == value
    assert request_id_from(value) == value


@pytest.mark.parametrize("value", ["", "x" * 129, "-rf", "has space", "new\nline", "a;b",
                                   "ümlaut", "a/b", "$(id)", "id\x00"])
def test_a_malformed_id_is_replaced_not_cleaned(value):
    assert well_formed(value) is None
    assert NEW_ID.fullmatch(request_id_from(value))


@pytest.mark.parametrize(("traceparent", "expected"), [
    (f"00-{TRACE}-00f067aa0ba902b7-01", TRACE),
    (f"01-{TRACE}-00f067aa0ba902b7-01-later-fields", TRACE),  # a later version may add fields
    (f"00-{TRACE}-00f067aa0ba902b7-01-extra", None),  # version 00 has exactly four
    (f"ff-{TRACE}-00f067aa0ba902b7-01", None),
    (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
    (f"00-{TRACE}-{'0' * 16}-01", None),
    (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),
    ("garbage", None),
])
def test_a_traceparent_gives_its_trace_id_when_valid(traceparent, expected):
    assert trace_id(traceparent) == expected


def test_the_callers_own_id_wins_over_its_traceparent():
    assert request_id_from("mine-1", f"00-{TRACE}-00f067aa0ba902b7-01") == "mine-1"
    assert request_id_from("bad id", f"00-{TRACE}-00f067aa0ba902b7-01") == TRACE


class Seen(logging.Handler):
    """What uvicorn logs (stdlib logging), with the request id its log context held."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, str, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.getMessage(), current_request_id()))


@pytest.fixture
def uvicorn_lines():
    seen = Seen()
    loggers = [logging.getLogger(name) for name in ("uvicorn.access", "uvicorn.error")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(seen)
        logger.setLevel(logging.INFO)
    yield seen.records
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(seen)
        logger.setLevel(level)


@pytest.fixture
def client():
    """The gateway without a database (no route here reads it), served by uvicorn."""
    app = create_app(None, None, make_challenge(), admin_token="admin-token-for-tests")

    @app.get("/boom", include_in_schema=False)
    def boom() -> dict:
        raise RuntimeError("secret internal detail /etc/passwd")

    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/livez", 200),
    ("GET", "/v1/no-such-thing", 404),
    ("DELETE", "/livez", 405),
    ("GET", "/v1/participants/me", 401),  # no token
    ("GET", "/v1/admin/submissions", 401),
    ("GET", "/v1/leaderboard/A%00", 422),  # refused before routing, by the outer middleware
    ("POST", "/v1/participants", 422),  # no body
])
def test_every_answer_echoes_a_good_id_and_replaces_a_bad_one(client, method, path, status):
    good = client.request(method, path, headers={"X-Request-Id": "trail-7"})
    assert good.status_code == status, good.text
    assert good.headers["X-Request-Id"] == "trail-7"
    bad = client.request(method, path, headers={"X-Request-Id": "two words"})
    assert bad.status_code == status
    assert NEW_ID.fullmatch(bad.headers["X-Request-Id"])
    none = client.request(method, path)
    assert NEW_ID.fullmatch(none.headers["X-Request-Id"])
    assert none.headers["X-Request-Id"] != bad.headers["X-Request-Id"]
    traced = client.request(method, path, headers={
        "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
    assert traced.headers["X-Request-Id"] == TRACE


def test_uvicorns_access_line_is_written_inside_the_requests_log_context(client,
                                                                         uvicorn_lines):
    client.get("/livez", headers={"X-Request-Id": "access-1"})
    access = [(line, rid) for name, line, rid in uvicorn_lines if name == "uvicorn.access"]
    assert [rid for line, rid in access if "/livez" in line] == ["access-1"], uvicorn_lines


def test_a_crash_answers_500_with_the_id_and_logs_it_on_the_crash_line(client, uvicorn_lines):
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        reply = client.get("/boom", headers={"X-Request-Id": "crash-1"})
    assert reply.status_code == 500
    assert reply.headers["X-Request-Id"] == "crash-1"
    assert reply.json()["error"] == {"code": "internal",
                                     "message": "internal error (request id crash-1)"}
    assert "passwd" not in reply.text
    crashed = [e for e in logs if e["event"] == "request crashed"]
    assert len(crashed) == 1 and crashed[0]["request_id"] == "crash-1"
    assert crashed[0]["log_level"] == "error" and crashed[0]["path"] == "/boom"
    # Each line written for the request names it; none is left without: uvicorn's own
    # "Exception in ASGI application" (outside any context) never comes.
    assert all(e.get("request_id") == "crash-1" for e in logs), logs
    assert [rid for name, _, rid in uvicorn_lines if name == "uvicorn.error"] == []
    assert [rid for name, _, rid in uvicorn_lines if name == "uvicorn.access"] == ["crash-1"]


def test_a_crash_without_an_id_names_the_one_in_the_header(client):
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        reply = client.get("/boom")
    request_id = reply.headers["X-Request-Id"]
    assert NEW_ID.fullmatch(request_id)
    assert request_id in reply.json()["error"]["message"]
    assert [e["request_id"] for e in logs if e["event"] == "request crashed"] == [request_id]


def test_the_openapi_document_tells_of_the_header():
    document = create_app(None, None, make_challenge()).openapi()
    assert "X-Request-Id" in document["info"]["description"]
