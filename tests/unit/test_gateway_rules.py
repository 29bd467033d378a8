"""Pure parts of the gateway: the quota day, the clock switch, zip checks from the tail, back-off."""

from __future__ import annotations

import asyncio
import io
import os
import zipfile
from datetime import UTC, datetime

import pytest

from gateway.config import GatewaySettings
from gateway.quota import check_window, quota_day, resets_at
from gateway.uploads import ReceivedForm, file_cap, receive_upload, zip_findings
from mfr.clock import FileClock, system_clock
from services.dispatcher.dispatcher import backoff_s
from tests.journey_support import make_challenge, model_zip


def test_quota_day_and_reset_follow_the_time_zone_across_dst():
    la = make_challenge(timezone="America/Los_Angeles")
    before_dst = datetime(2021, 3, 14, 7, 59, tzinfo=UTC)  # 23:59 PST on 13 March
    assert quota_day(la, before_dst).isoformat() == "2021-03-13"
    assert resets_at(la, before_dst) == datetime(2021, 3, 14, 8, 0, tzinfo=UTC)
    on_dst_day = datetime(2021, 3, 14, 12, 0, tzinfo=UTC)  # 05:00 PDT: the day has 23 hours
    assert resets_at(la, on_dst_day) == datetime(2021, 3, 15, 7, 0, tzinfo=UTC)
    utc = make_challenge()
    assert resets_at(utc, datetime(2021, 7, 1, 23, 59, 59, tzinfo=UTC)) == \
        datetime(2021, 7, 2, tzinfo=UTC)


def test_window_edges():
    c = make_challenge()
    check_window(c, c.opens)  # the opening instant is inside
    with pytest.raises(Exception) as err:
        check_window(c, c.closes)  # the closing instant is outside
    assert getattr(err.value, "code", "") == "window_closed"


def test_fake_clock_needs_both_variables(tmp_path, monkeypatch):
    path = tmp_path / "now"
    path.write_text("2030-01-02T03:04:05+00:00")
    monkeypatch.setenv("MFR_FAKE_CLOCK_FILE", str(path))
    monkeypatch.delenv("MFR_ALLOW_FAKE_CLOCK", raising=False)
    required = {"database_url": "postgresql://x", "s3_endpoint": "x:1", "s3_access_key": "k",
                "s3_secret_key": "s", "admin_token": "a" * 16}
    assert GatewaySettings(**required).clock() is system_clock
    monkeypatch.setenv("MFR_ALLOW_FAKE_CLOCK", "1")
    clock = GatewaySettings(**required).clock()
    assert clock() == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    path.write_text("2030-01-03T00:00:00")  # naive means UTC; re-read on every call
    assert clock() == datetime(2030, 1, 3, tzinfo=UTC)
    os.remove(path)
    assert abs((FileClock(path)() - datetime.now(UTC)).total_seconds()) < 5


def _form(data: bytes, tail: int | None = None) -> ReceivedForm:
    return ReceivedForm(size=len(data), head=data[:4],
                        tail=bytearray(data if tail is None else data[-tail:]))


def test_zip_checks_from_the_tail_alone():
    payload = os.urandom(200_000)
    good = model_zip(payload=payload)
    assert zip_findings(_form(good, tail=4096), 10**6) == []  # the local data is not needed
    many = model_zip(extra={f"f{i}.txt": b"x" for i in range(100)})
    assert [f["code"] for f in zip_findings(_form(many), 10**6)] == ["zip_unsafe"]
    assert [f["code"] for f in zip_findings(_form(good), 1000)] == ["model_too_large"]
    assert [f["code"] for f in zip_findings(_form(b"\x89PNG...."), 10**6)] == ["zip_invalid"]
    assert [f["code"] for f in zip_findings(_form(b"PK\x03\x04broken"), 10**6)] == ["zip_invalid"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("model.onnx")
        info.external_attr = 0o120777 << 16  # a symbolic link
        archive.writestr(info, "/etc/passwd")
    assert [f["code"] for f in zip_findings(_form(buffer.getvalue()), 10**6)] == ["zip_unsafe"]


def test_multipart_fields_in_any_order_and_the_cap_from_the_track():
    boundary = "xyz"
    data = model_zip()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.zip\"\r\n"
            f"\r\n").encode() + data + (f"\r\n--{boundary}\r\nContent-Disposition: form-data; "
                                        f"name=\"track\"\r\n\r\nB\r\n--{boundary}--\r\n").encode()
    chunks = [body[i:i + 7] for i in range(0, len(body), 7)]  # split everywhere

    async def stream():
        for chunk in chunks:
            yield chunk

    class Sink:
        def __init__(self):
            self.data = b""

        async def put(self, piece):
            self.data += piece

        async def finish(self):
            return "stored"

        async def abort(self):
            pass

    sink = Sink()
    form = asyncio.run(receive_upload(stream(), f"multipart/form-data; boundary={boundary}",
                                      lambda: sink, lambda fields: file_cap(10**6)))
    assert form.fields == {"track": "B"} and form.filename == "m.zip"
    assert sink.data == data and form.size == len(data) and form.stored == "stored"


def test_backoff_grows_and_is_capped():
    for attempt in range(1, 12):
        delay = backoff_s(attempt, 2.0, 60.0)
        ceiling = min(60.0, 2.0 * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
