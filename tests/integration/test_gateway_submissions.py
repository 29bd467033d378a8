"""The gateway's upload path on real servers: tokens, streaming to S3, zip checks, limits, window."""

from __future__ import annotations

import asyncio
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest

from gateway.app import create_app
from gateway.errors import TooLarge
from gateway.uploads import MIB, file_cap, receive_upload
from tests.journey_support import T0, FakeClock, ServerThread, make_challenge, model_zip

pytestmark = pytest.mark.integration
ADMIN = "admin-token-for-tests"


@pytest.fixture
def gateway(db_pool, object_store):
    clock = FakeClock(T0)
    challenge = make_challenge(max_model_mb=2)
    app = create_app(db_pool, object_store, challenge, clock=clock, admin_token=ADMIN)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, clock, object_store, db_pool


def signup(client, name="Ann", organisation="Lab", hide=False) -> dict:
    reply = client.post("/v1/participants", json={"name": name, "organisation": organisation,
                                                  "hide_organisation": hide})
    assert reply.status_code == 201, reply.text
    return reply.json()


def submit(client, token, data=None, track="A", filename="model.zip"):
    return client.post("/v1/submissions", headers={"Authorization": f"Bearer {token}"},
                       data={"track": track},
                       files={"file": (filename, data if data is not None else model_zip())})


def test_signup_shows_the_token_once_and_stores_only_its_hash(gateway):
    client, _, _, pool = gateway
    created = signup(client)
    assert set(created) == {"id", "token"}
    with pool.connection() as conn:
        stored = conn.execute("SELECT token_hash FROM participants").fetchone()["token_hash"]
    assert stored == hashlib.sha256(created["token"].encode()).hexdigest()
    assert created["token"] not in stored
    me = client.get("/v1/participants/me", headers={"Authorization": f"Bearer {created['token']}"})
    assert me.json()["name"] == "Ann"
    assert client.get("/v1/participants/me", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/v1/participants", json={"name": ""}).status_code == 422


def test_upload_is_stored_in_object_storage_and_queued(gateway):
    client, _, store, pool = gateway
    token = signup(client)["token"]
    payload = model_zip(payload=os.urandom(3 * MIB // 2))  # more than one 1 MiB hand-off
    reply = submit(client, token, payload)
    assert reply.status_code == 202, reply.text
    body = reply.json()
    assert body["state"] == "queued"
    with pool.connection() as conn:
        row = conn.execute("SELECT upload_bucket, upload_key, upload_sha256, upload_size, quota_day"
                           " FROM submissions WHERE id = %s", (body["id"],)).fetchone()
        events = conn.execute("SELECT state FROM submission_events WHERE submission_id = %s",
                              (body["id"],)).fetchall()
    assert store.get_bytes(row["upload_bucket"], row["upload_key"]) == payload
    assert row["upload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert row["upload_size"] == len(payload) and row["quota_day"] == T0.date()
    assert [e["state"] for e in events] == ["queued"]
    auth = {"Authorization": f"Bearer {token}"}
    one = client.get(f"/v1/submissions/{body['id']}", headers=auth).json()
    assert one["state"] == "queued" and one["track"] == "A" and one["errors"] == []
    assert one["scores"] == {} and one["ranking_score"] is None and one["public"] is False
    assert [s["id"] for s in client.get("/v1/submissions", headers=auth).json()["submissions"]] == [body["id"]]


@pytest.mark.parametrize("data, code", [
    (b"plain bytes, not a zip", "zip_invalid"),
    (model_zip(extra={"second.onnx": b"x"}), "zip_multiple_models"),
    (model_zip(name="../evil.onnx"), "zip_unsafe"),
    (model_zip(name="folder/model.onnx"), "zip_no_model"),
])
def test_bad_zips_are_refused_at_once_and_nothing_is_kept(gateway, data, code):
    client, _, store, pool = gateway
    token = signup(client)["token"]
    reply = submit(client, token, data)
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["code"] == code
    assert code in [e["code"] for e in reply.json()["error"]["errors"]]
    assert store.list_keys(store.buckets.models) == []
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM submissions").fetchone()["n"] == 0


def test_too_large_is_413_before_the_body_is_read(gateway):
    client, _, store, _ = gateway
    token = signup(client)["token"]
    big = model_zip(payload=os.urandom(file_cap(2 * MIB) + 64 * 1024))
    reply = submit(client, token, big)
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "too_large"
    assert store.list_keys(store.buckets.models) == []


def test_streamed_upload_without_length_is_cut_off_at_the_cap(object_store):
    """No Content-Length (chunked): the running count stops it, and S3 keeps nothing."""
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"track\"\r\n\r\nA\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.zip\"\r\n"
            "Content-Type: application/zip\r\n\r\n").encode()
    sent = {"bytes": 0}

    async def body():
        yield head
        for _ in range(64):  # 64 MiB offered, cap is about 2 MiB
            sent["bytes"] += MIB
            yield os.urandom(MIB)

    from gateway.uploads import S3Sink

    key = "uploads/x/too-big.zip"
    with pytest.raises(TooLarge):
        asyncio.run(receive_upload(body(), f"multipart/form-data; boundary={boundary}",
                                   lambda: S3Sink(object_store, object_store.buckets.models, key),
                                   lambda fields: file_cap(1 * MIB)))
    assert sent["bytes"] <= 4 * MIB
    assert object_store.list_keys(object_store.buckets.models) == []


def test_fourth_submission_of_the_day_is_refused_and_the_next_day_accepted(gateway):
    client, clock, _, pool = gateway
    token = signup(client)["token"]
    auth = {"Authorization": f"Bearer {token}"}
    ids = [submit(client, token).json()["id"] for _ in range(3)]
    assert client.get("/v1/quota", headers=auth).json()["remaining"] == 0
    refused = submit(client, token)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "daily_limit"
    assert error["resets_at"] == "2021-07-02T00:00:00+00:00"
    assert int(refused.headers["Retry-After"]) == 12 * 3600
    # A submission the validator rejected gives its slot back.
    with pool.connection() as conn:
        conn.execute("UPDATE submissions SET state = 'rejected' WHERE id = %s", (ids[0],))
    ids.append(submit(client, token).json()["id"])
    assert submit(client, token).status_code == 429
    # So does one that failed for a platform reason; one the model made fail does not.
    with pool.connection() as conn:
        conn.execute("UPDATE submissions SET state = 'failed', error_code = 'run_failed'"
                     " WHERE id = %s", (ids[1],))
        conn.execute("UPDATE submissions SET state = 'failed', error_code = 'tile_failed'"
                     " WHERE id = %s", (ids[2],))
    assert client.get("/v1/quota", headers=auth).json()["used"] == 2
    assert submit(client, token).status_code == 202
    assert submit(client, token).status_code == 429
    clock.now = T0 + timedelta(hours=12)  # midnight UTC: a new day
    quota = client.get("/v1/quota", headers=auth).json()
    assert quota == {"limit": 3, "used": 0, "remaining": 3, "day": "2021-07-02",
                     "resets_at": "2021-07-03T00:00:00+00:00", "rejected": 0,
                     "rejected_limit": 10}
    assert submit(client, token).status_code == 202


def test_rejected_uploads_are_free_but_limited_per_day(db_pool, object_store):
    from dataclasses import replace

    challenge = replace(make_challenge(max_model_mb=2), daily_rejected_limit=2)
    clock = FakeClock(T0)
    app = create_app(db_pool, object_store, challenge, clock=clock, admin_token=ADMIN)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        token = signup(client)["token"]
        auth = {"Authorization": f"Bearer {token}"}
        for _ in range(2):
            sid = submit(client, token).json()["id"]
            with db_pool.connection() as conn:
                conn.execute("UPDATE submissions SET state = 'rejected' WHERE id = %s", (sid,))
        quota = client.get("/v1/quota", headers=auth).json()
        assert (quota["used"], quota["rejected"], quota["rejected_limit"]) == (0, 2, 2)
        refused = submit(client, token)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rejected_limit"
        assert int(refused.headers["Retry-After"]) == 12 * 3600
        other = signup(client, "Bo")["token"]  # the limit is per participant
        assert submit(client, other).status_code == 202
        clock.now = T0 + timedelta(hours=12)  # a new day
        assert submit(client, token).status_code == 202


def test_the_day_follows_the_challenge_time_zone(db_pool, object_store):
    challenge = make_challenge(max_model_mb=1, timezone="America/Los_Angeles", daily_limit=1)
    clock = FakeClock(T0)  # 12:00 UTC = 05:00 in Los Angeles
    app = create_app(db_pool, object_store, challenge, clock=clock, admin_token=ADMIN)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        token = signup(client)["token"]
        assert submit(client, token).status_code == 202
        clock.now = T0 + timedelta(hours=12, minutes=30)  # 00:30 UTC, still 17:30 the same day there
        refused = submit(client, token)
        assert refused.status_code == 429
        assert refused.json()["error"]["resets_at"] == "2021-07-02T07:00:00+00:00"
        clock.now = T0 + timedelta(hours=19)  # 07:00 UTC = midnight in Los Angeles
        assert submit(client, token).status_code == 202


def test_concurrent_uploads_never_exceed_the_limit(gateway):
    client, _, store, _ = gateway
    token = signup(client)["token"]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: submit(client, token), range(8)))
    codes = sorted(r.status_code for r in replies)
    assert codes == [202] * 3 + [429] * 5, codes
    assert len(store.list_keys(store.buckets.models)) == 3  # refused uploads were removed


def test_outside_the_window_is_403(gateway):
    client, clock, _, _ = gateway
    token = signup(client)["token"]
    clock.now = T0.replace(year=2021, month=5, day=31)
    reply = submit(client, token)
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "window_closed"
    clock.now = T0.replace(month=10, day=2, hour=6, minute=59)  # the closing minute itself
    assert submit(client, token).status_code == 403


def test_unknown_track_and_missing_token(gateway):
    client, _, store, _ = gateway
    token = signup(client)["token"]
    reply = submit(client, token, track="Z")
    assert reply.status_code == 422 and reply.json()["error"]["code"] == "unknown_track"
    assert store.list_keys(store.buckets.models) == []
    assert client.post("/v1/submissions", data={"track": "A"},
                       files={"file": ("m.zip", model_zip())}).status_code == 401


def test_openapi_documents_the_contract(gateway):
    client, _, _, _ = gateway
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/participants", "/v1/submissions", "/v1/submissions/{submission_id}",
                 "/v1/submissions/{submission_id}/public", "/v1/quota",
                 "/v1/leaderboard/{track}"):
        assert path in paths, path
    assert "multipart/form-data" in paths["/v1/submissions"]["post"]["requestBody"]["content"]
