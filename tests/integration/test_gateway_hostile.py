"""A hostile participant against the gateway: malformed forms, odd names, forged tokens, CSV formulas."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime
from fractions import Fraction

import httpx
import pytest

from gateway.app import create_app
from gateway.uploads import MIB, S3Sink, file_cap, receive_upload
from mfr.errors import InvalidInput
from mfr.ranking.board import Board, Entry, export_csv
from tests.journey_support import T0, FakeClock, ServerThread, make_challenge, model_zip

pytestmark = pytest.mark.integration
ADMIN = "admin-token-for-tests"


@pytest.fixture
def gateway(db_pool, object_store):
    challenge = make_challenge(max_model_mb=2)
    app = create_app(db_pool, object_store, challenge, clock=FakeClock(T0), admin_token=ADMIN)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, object_store


def signup(client, name="Ann", organisation="Lab"):
    return client.post("/v1/participants", json={"name": name, "organisation": organisation})


def token_of(client, name="Ann") -> str:
    reply = signup(client, name)
    assert reply.status_code == 201, reply.text
    return reply.json()["token"]


def test_malformed_multipart_is_422_not_a_crash(gateway):
    client, store = gateway
    auth = {"Authorization": f"Bearer {token_of(client)}",
            "Content-Type": "multipart/form-data; boundary=b"}
    for body in (b"--b\r\nno colon in this header\r\n\r\nx\r\n--b--\r\n",
                 b"not a multipart body at all"):
        reply = client.post("/v1/submissions", headers=auth, content=body)
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"]["code"] == "form_invalid"
    assert store.list_keys(store.buckets.models) == []


def test_two_file_parts_are_refused(gateway):
    """Two parts named ``file`` would be concatenated into one stored object."""
    client, store = gateway
    reply = client.post("/v1/submissions", headers={"Authorization": f"Bearer {token_of(client)}"},
                        data={"track": "A"},
                        files=[("file", ("a.zip", b"junk" * 100)), ("file", ("b.zip", model_zip()))])
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["code"] == "form_invalid"
    assert store.list_keys(store.buckets.models) == []


def test_endless_small_fields_without_content_length_are_cut_off(object_store):
    """No Content-Length: only the file's bytes were counted, so fields could grow memory forever."""
    boundary = "b0undary"
    sent = {"bytes": 0}

    async def body():
        for i in range(10_000):  # 10 000 distinct fields of 32 KiB: 320 MiB kept in memory
            part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\n"
                    ).encode() + b"x" * (32 * 1024) + b"\r\n"
            sent["bytes"] += len(part)
            yield part

    with pytest.raises(InvalidInput) as caught:
        asyncio.run(receive_upload(
            body(), f"multipart/form-data; boundary={boundary}",
            lambda: S3Sink(object_store, object_store.buckets.models, "uploads/x/fields.zip"),
            lambda fields: file_cap(1 * MIB)))
    assert caught.value.code == "form_invalid"
    assert sent["bytes"] <= 1 * MIB


def test_endless_part_header_is_cut_off(object_store):
    boundary = "b0undary"
    sent = {"bytes": 0}

    async def body():
        yield f"--{boundary}\r\nX-Junk: ".encode()
        for _ in range(256):  # a 256 MiB header value
            sent["bytes"] += MIB
            yield b"a" * MIB

    with pytest.raises(InvalidInput):
        asyncio.run(receive_upload(
            body(), f"multipart/form-data; boundary={boundary}",
            lambda: S3Sink(object_store, object_store.buckets.models, "uploads/x/header.zip"),
            lambda fields: file_cap(1 * MIB)))
    assert sent["bytes"] <= 2 * MIB


@pytest.mark.parametrize(("name", "code"), [("nul\x00byte", "invalid_characters"),
                                           ("   ", "invalid_input"),
                                           ("esc\x1b[2Jclear", "invalid_characters"),
                                           ("two\nlines", "invalid_characters"),
                                           ("c1\x85control", "invalid_characters")])
def test_names_with_control_characters_or_blank_are_422(gateway, name, code):
    client, _ = gateway
    reply = signup(client, name)
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["code"] == code
    assert "Traceback" not in reply.text and "psycopg" not in reply.text


def test_organisation_with_control_characters_is_422(gateway):
    client, _ = gateway
    assert signup(client, "Ann", "Lab\x00").status_code == 422
    token = token_of(client, "Bob")
    reply = client.patch("/v1/participants/me", headers={"Authorization": f"Bearer {token}"},
                         json={"organisation": "Lab\x00"})
    assert reply.status_code == 422, reply.text
    ok = signup(client, "Ünïcödé 名前 =1+1", "Lab ✓")
    assert ok.status_code == 201, ok.text


def test_non_ascii_admin_token_is_403_not_500(gateway):
    client, _ = gateway
    reply = client.get("/v1/admin/submissions", headers={"Authorization": "Bearer é".encode("latin-1")})
    assert reply.status_code == 403, reply.text
    assert client.get("/v1/admin/submissions",
                      headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200


def test_empty_admin_token_grants_nothing(db_pool, object_store):
    app = create_app(db_pool, object_store, make_challenge(), clock=FakeClock(T0), admin_token="")
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        for header in ("Bearer x", "Bearer \"\"", "Basic Og=="):
            assert client.get("/v1/admin/submissions",
                              headers={"Authorization": header}).status_code in (401, 403)
        assert client.get("/v1/admin/submissions").status_code == 401


def test_another_participants_submission_is_404_everywhere(gateway):
    client, _ = gateway
    ann, bob = token_of(client, "Ann"), token_of(client, "Bob")
    created = client.post("/v1/submissions", headers={"Authorization": f"Bearer {ann}"},
                          data={"track": "A"}, files={"file": ("m.zip", model_zip())})
    assert created.status_code == 202, created.text
    sid = created.json()["id"]
    as_bob = {"Authorization": f"Bearer {bob}"}
    assert client.get(f"/v1/submissions/{sid}", headers=as_bob).status_code == 404
    assert client.get(f"/v1/submissions/{sid}").status_code == 404
    assert client.post(f"/v1/submissions/{sid}/public", headers=as_bob).status_code == 404
    assert client.get(f"/v1/admin/submissions/{sid}", headers=as_bob).status_code == 403
    assert sid not in client.get("/v1/submissions", headers=as_bob).text


def _entry(name: str, organisation: str) -> Entry:
    return Entry(rank=1, submission_id="00000000-0000-0000-0000-000000000001", participant_id="p",
                 participant=name, organisation=organisation, organisation_hidden=False,
                 baseline=False, ranking_exact=Fraction(1, 2), protocols={},
                 model_size_mb=None, latency_ms=None, submitted_at=datetime(2021, 7, 1, tzinfo=UTC))


@pytest.mark.parametrize("name", ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3",
                                  "@SUM(A1)", "\tx"])
def test_csv_export_does_not_let_a_name_become_a_formula(name):
    challenge = make_challenge()
    board = Board(challenge.id, "A", (_entry(name, "=cmd|' /C calc'!A0"),), frozen=False,
                  updated_at=None)
    rows = list(csv.DictReader(io.StringIO(export_csv(board, challenge, reveal=True), newline="")))
    assert rows[0]["participant"] == "'" + name
    assert rows[0]["organisation"] == "'=cmd|' /C calc'!A0"
    plain = Board(challenge.id, "A", (_entry("Ann", "Lab"),), frozen=False, updated_at=None)
    row = next(csv.DictReader(io.StringIO(export_csv(plain, challenge))))
    assert (row["participant"], row["organisation"]) == ("Ann", "Lab")


def test_cli_leaderboard_survives_markup_and_escape_codes_in_names():
    from rich.console import Console

    from cli.participant import board_table

    board = {"track": "A", "frozen": False, "protocols": [{"id": "m", "title": "M"}],
             "entries": [{"rank": 1, "participant": "[/bold]x[link=http://e]y", "baseline": True,
                          "organisation": "\x1b]0;pwned\x07Lab", "organisation_hidden": False,
                          "protocols": {"m": 0.5}, "ranking_score": 0.5, "model_size_mb": 1.0,
                          "latency_ms": 1.0}]}
    console = Console(file=io.StringIO(), force_terminal=False, width=200)
    console.print(board_table(board))
    text = console.file.getvalue()
    assert "[/bold]x[link=http://e]y [baseline]" in text
    assert "\x1b" not in text and "\x07" not in text
