"""An upload's request id stays with its submission: stored with the row, shown to its owner
and to the organisers, never to other participants. Real PostgreSQL and S3."""

from __future__ import annotations

import re

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from tests.journey_support import (
    T0,
    ServerThread,
    add_participant,
    add_scored,
    gateway_app,
    model_zip,
)

pytestmark = pytest.mark.integration
ADMIN = "admin-token-for-tests"
NEW_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def gateway(db_pool, object_store):
    app, challenge, _ = gateway_app(db_pool, object_store, T0, ADMIN)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, challenge, db_pool


def _signup(client, name: str) -> dict:
    token = client.post("/v1/participants", json={"name": name}).json()["token"]
    return {"Authorization": f"Bearer {token}"}


def _upload(client, auth: dict, headers: dict | None = None):
    return client.post("/v1/submissions", headers={**auth, **(headers or {})},
                       data={"track": "A"}, files={"file": ("model.zip", model_zip())})


def test_the_uploads_id_is_stored_shown_to_its_owner_and_the_organisers(gateway):
    client, _, pool = gateway
    ann = _signup(client, "Ann")
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        reply = _upload(client, ann, {"X-Request-Id": "ann-upload-1"})
    assert reply.status_code == 202, reply.text
    assert reply.headers["X-Request-Id"] == "ann-upload-1"
    sid = reply.json()["id"]
    with pool.connection() as conn:
        stored = conn.execute("SELECT request_id FROM submissions WHERE id = %s", (sid,))
        assert stored.fetchone()["request_id"] == "ann-upload-1"
    queued = [e for e in logs if e["event"] == "submission queued"]
    assert [(e["submission"], e["request_id"]) for e in queued] == [(sid, "ann-upload-1")]

    own = client.get(f"/v1/submissions/{sid}", headers=ann).json()
    assert own["request_id"] == "ann-upload-1"
    organisers = {"Authorization": f"Bearer {ADMIN}"}
    assert client.get(f"/v1/admin/submissions/{sid}", headers=organisers).json()[
        "request_id"] == "ann-upload-1"
    queue = client.get("/v1/admin/submissions", headers=organisers).json()["submissions"]
    assert [s["request_id"] for s in queue] == ["ann-upload-1"]


def test_an_upload_without_a_good_id_is_stored_under_the_one_it_was_answered_with(gateway):
    client, _, pool = gateway
    ann = _signup(client, "Ann")
    reply = _upload(client, ann, {"X-Request-Id": "no spaces please"})
    assert reply.status_code == 202, reply.text
    given = reply.headers["X-Request-Id"]
    assert NEW_ID.fullmatch(given)
    with pool.connection() as conn:
        stored = conn.execute("SELECT request_id FROM submissions WHERE id = %s",
                              (reply.json()["id"],)).fetchone()["request_id"]
    assert stored == given


def test_another_participant_does_not_see_it_on_a_board_entry(gateway):
    client, challenge, pool = gateway
    with pool.connection() as conn:
        ann, _ = add_participant(conn, "Ann")
    sid = add_scored(pool, challenge, ann, (7, 10), (8, 10))
    with pool.connection() as conn:
        conn.execute("UPDATE submissions SET request_id = 'ann-private-7' WHERE id = %s", (sid,))
    bob = _signup(client, "Bob")
    entry = client.get(f"/v1/submissions/{sid}", headers=bob)
    assert entry.status_code == 200, entry.text
    assert entry.json()["participant"] == "Ann"
    assert "ann-private-7" not in entry.text and "request_id" not in entry.json()
