"""Every input gets a clean answer: control characters, cut-off uploads, wrong methods, a lost database.

Each case once gave a 500 (a psycopg DataError on NUL), a 202 for half an
upload, a 405 without ``Allow``, or a status the OpenAPI document did not list.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from structlog.testing import capture_logs

from gateway.app import create_app
from tests.journey_support import T0, FakeClock, ServerThread, make_challenge, model_zip

pytestmark = pytest.mark.integration
ADMIN = "admin-token-for-tests"
BOUNDARY = "b0undary"


@pytest.fixture
def gateway(db_pool, object_store):
    app = create_app(db_pool, object_store, make_challenge(max_model_mb=2), clock=FakeClock(T0),
                     admin_token=ADMIN)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        token = client.post("/v1/participants", json={"name": "Ann"}).json()["token"]
        yield client, {"Authorization": f"Bearer {token}"}, object_store


def multipart(track: str, filename: str, data: bytes, close: bool = True) -> bytes:
    """A form built by hand: httpx would percent-escape control characters in the file name."""
    body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="track"\r\n\r\n{track}\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
            '\r\nContent-Type: application/zip\r\n\r\n').encode() + data
    return body + (f"\r\n--{BOUNDARY}--\r\n".encode() if close else b"")


def upload(client, auth, body: bytes):
    return client.post("/v1/submissions", content=body,
                       headers={**auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


def assert_invalid_characters(reply) -> None:
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["code"] == "invalid_characters", reply.text


@pytest.mark.parametrize("url", ["/v1/submissions?track=%00", "/v1/submissions?track=A%1b%5b2J",
                                 "/v1/submissions?tr%00ck=A", "/v1/submissions/%00",
                                 "/v1/submissions/a%0Ab/public", "/v1/leaderboard/A%00",
                                 "/v1/leaderboard/A/export?format=csv%C2%85"])
def test_a_control_character_in_the_path_or_query_is_invalid_characters(gateway, url):
    client, auth, _ = gateway
    method = "POST" if url.endswith("/public") else "GET"
    assert_invalid_characters(client.request(method, url, headers=auth))
    assert client.get("/v1/submissions", headers=auth).status_code == 200


@pytest.mark.parametrize("url", ["/v1/admin/submissions?track=%00",
                                 "/v1/admin/submissions?state=queued&state=%00",
                                 "/v1/admin/submissions/%00",
                                 "/v1/admin/leaderboard/A%00/export?format=json"])
def test_a_control_character_in_an_organisers_filter_is_invalid_characters(gateway, url):
    client, _, _ = gateway
    assert_invalid_characters(client.get(url, headers={"Authorization": f"Bearer {ADMIN}"}))


def test_a_control_character_in_the_token_is_invalid_characters(gateway):
    client, auth, _ = gateway
    reply = client.get("/v1/participants/me",
                       headers={"Authorization": auth["Authorization"] + "\x01"})
    assert_invalid_characters(reply)
    assert client.get("/v1/participants/me", headers=auth).status_code == 200


@pytest.mark.parametrize(("track", "filename"), [("A", "model\x00.zip"), ("A", "\x1b]0;x\x07.zip"),
                                                 ("A", "a\x7f.zip"), ("A\x00", "model.zip"),
                                                 ("A\x1b", "model.zip")])
def test_a_control_character_in_a_form_field_or_file_name_is_refused_and_nothing_kept(
        gateway, track, filename):
    client, auth, store = gateway
    assert_invalid_characters(upload(client, auth, multipart(track, filename, model_zip())))
    assert store.list_keys(store.buckets.models) == []
    assert client.get("/v1/submissions", headers=auth).json()["submissions"] == []
    assert upload(client, auth, multipart("A", "ok é.zip", model_zip())).status_code == 202


def test_a_control_character_in_a_json_field_is_invalid_characters(gateway):
    client, auth, _ = gateway
    assert_invalid_characters(client.patch("/v1/participants/me", headers=auth,
                                           json={"organisation": "Lab\x00"}))
    assert_invalid_characters(client.post("/v1/admin/participants",
                                           headers={"Authorization": f"Bearer {ADMIN}"},
                                           json={"name": "Base\x1bline"}))


@pytest.mark.parametrize("cut", ["no closing boundary", "inside the file", "inside a header"])
def test_a_cut_off_multipart_body_is_form_invalid_and_nothing_kept(gateway, cut):
    client, auth, store = gateway
    data = model_zip(payload=bytes(range(256)) * 64)  # incompressible: a long file part
    headers = multipart("A", "model.zip", b"", close=False)
    body = {"no closing boundary": multipart("A", "model.zip", data, close=False),
            "inside the file": headers + data[:len(data) // 2],
            "inside a header": headers[:len(headers) - 20]}[cut]
    reply = upload(client, auth, body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["code"] == "form_invalid"
    assert store.list_keys(store.buckets.models) == []
    assert client.get("/v1/submissions", headers=auth).json()["submissions"] == []


def test_a_whole_body_without_a_final_newline_is_accepted(gateway):
    """RFC 2046 needs nothing after the closing ``--``: the check must not refuse that."""
    client, auth, _ = gateway
    reply = upload(client, auth, multipart("A", "model.zip", model_zip()).removesuffix(b"\r\n"))
    assert reply.status_code == 202, reply.text


@pytest.mark.parametrize(("method", "url", "allow"), [
    ("PUT", "/v1/submissions", "GET, POST"),
    ("TRACE", "/v1/participants/me", "GET, PATCH"),
    ("DELETE", "/v1/submissions/00000000-0000-0000-0000-000000000001", "GET"),
    ("PUT", "/v1/admin/leaderboard/A/freeze", "DELETE, POST"),
    ("POST", "/metrics", "GET"),
])
def test_405_names_every_allowed_method(gateway, method, url, allow):
    client, auth, _ = gateway
    reply = client.request(method, url, headers=auth)
    assert reply.status_code == 405, reply.text
    assert reply.headers["allow"] == allow
    assert reply.json()["error"]["code"] == "method_not_allowed"


def test_a_body_that_is_not_json_is_invalid_input_not_400(gateway):
    client, _, _ = gateway
    for body in (b"\xff\xfe{not json", b'{"name": '):
        reply = client.post("/v1/participants", content=body,
                            headers={"Content-Type": "application/json"})
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"]["code"] == "invalid_input"


def test_an_unreachable_database_is_503_unavailable(object_store):
    from psycopg_pool import ConnectionPool

    from cli.stack.ports import free_port

    pool = ConnectionPool(f"postgresql://127.0.0.1:{free_port()}/none", open=False, timeout=1,
                          kwargs={"connect_timeout": 1})
    pool.open(wait=False)
    app = create_app(pool, object_store, make_challenge(), clock=FakeClock(T0), admin_token=ADMIN)
    try:
        with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            reply = client.get("/v1/quota", headers={"Authorization": "Bearer mfr_x"})
            assert reply.status_code == 503, reply.text
            assert reply.json()["error"]["code"] == "unavailable"
            assert "Retry-After" in reply.headers
    finally:
        pool.close()


ERRORS_OF = {  # beyond 422 and 503, which every operation can answer
    ("post", "/v1/participants"): {409},
    ("get", "/v1/participants/me"): {401},
    ("patch", "/v1/participants/me"): {401},
    ("post", "/v1/submissions"): {401, 403, 413, 429},
    ("get", "/v1/submissions"): {401},
    ("get", "/v1/submissions/{submission_id}"): {401, 404},
    ("post", "/v1/submissions/{submission_id}/public"): {401, 404, 409},
    ("get", "/v1/quota"): {401},
    ("get", "/v1/admin/submissions"): {401, 403},
    ("get", "/v1/admin/submissions/{submission_id}"): {401, 403, 404},
    ("post", "/v1/admin/submissions/{submission_id}/rerun"): {401, 403, 404, 409},
    ("post", "/v1/admin/submissions/{submission_id}/cancel"): {401, 403, 404, 409},
}


def test_the_openapi_document_lists_every_error_with_the_error_schema():
    document = create_app(None, None, make_challenge(), admin_token=ADMIN).openapi()
    assert "ErrorBody" in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            errors = {int(s) for s in operation["responses"] if int(s) >= 400}
            assert {422, 503} | ERRORS_OF.get((method, path), set()) <= errors, (method, path)
            if path.startswith("/v1/admin/"):
                assert {401, 403} <= errors, (method, path)
            for status in errors:
                schema = operation["responses"][str(status)]["content"]["application/json"]
                assert schema["schema"]["$ref"].endswith("/ErrorBody"), (method, path, status)


def test_a_client_that_disconnects_mid_upload_is_no_crash_and_leaves_nothing(gateway):
    client, auth, store = gateway
    port = int(str(client.base_url).rsplit(":", 1)[1].rstrip("/"))
    head = (f"POST /v1/submissions HTTP/1.1\r\nHost: gateway\r\n"
            f"Authorization: {auth['Authorization']}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            "Content-Length: 3000000\r\n\r\n").encode()
    with capture_logs() as logs:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            # 2 MB of the promised 3: past the first 1 MiB flush, so an S3 upload has begun.
            sock.sendall(head + multipart("A", "model.zip", b"x" * 2_000_000, close=False))
        deadline = time.monotonic() + 20  # a hang guard only
        ended = ("client disconnected mid-request", "request crashed")
        while not any(e["event"] in ended for e in logs):
            assert time.monotonic() < deadline, logs
            time.sleep(0.05)
    assert not [e for e in logs if e["log_level"] == "error"], logs
    assert store.list_keys(store.buckets.models) == []
    assert client.get("/v1/submissions", headers=auth).json()["submissions"] == []
