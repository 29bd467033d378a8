"""A small Python client of the gateway's HTTP API (the CLI and the demo use it).

Uploads stream from disk with a known ``Content-Length`` (so the gateway can
refuse an oversized file before a byte is sent) and report progress per chunk.
"""

from __future__ import annotations

import secrets
import stat
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

import httpx

from cli.settings import DEFAULT_GATEWAY
from mfr.errors import MfrError
from mfr.records.states import TERMINAL

CHUNK = 256 * 1024


def zip_model(model: bytes | Path, out: Path) -> Path:
    """``zip out model.onnx``: one regular-file entry named model.onnx, deflated, as zip(1) writes it."""
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    info = zipfile.ZipInfo("model.onnx", date_time=(2021, 6, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | 0o644) << 16  # a regular file (writestr alone omits the type)
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(info, data)
    return out


class GatewayError(MfrError):
    """A refusal from the gateway: its status, stable code and message."""

    def __init__(self, status: int, code: str, message: str, body: dict | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.body = body or {}


class GatewayClient:
    def __init__(self, url: str | None = None, token: str | None = None,
                 timeout: float = 60.0) -> None:
        self.url = (url or DEFAULT_GATEWAY).rstrip("/")  # commands pass MFR_GATEWAY's
        self.token = token
        self.http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _headers(self, token: str | None = None) -> dict:
        token = token or self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def request(self, method: str, path: str, token: str | None = None, **kwargs) -> httpx.Response:
        try:
            reply = self.http.request(method, path, headers={**self._headers(token),
                                                             **kwargs.pop("headers", {})}, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayError(0, "unreachable", f"cannot reach the gateway at {self.url}: {exc}") from None
        if reply.status_code >= 400:
            try:
                body = reply.json().get("error", {})
            except ValueError:
                body = {}
            raise GatewayError(reply.status_code, body.get("code", f"http_{reply.status_code}"),
                               body.get("message", reply.text[:200]), body)
        return reply

    def json(self, method: str, path: str, **kwargs) -> dict:
        return self.request(method, path, **kwargs).json()

    # --- participants ------------------------------------------------------------
    def signup(self, name: str, organisation: str = "", hide_organisation: bool = False) -> dict:
        return self.json("POST", "/v1/participants", json={
            "name": name, "organisation": organisation, "hide_organisation": hide_organisation})

    def me(self) -> dict:
        return self.json("GET", "/v1/participants/me")

    def quota(self) -> dict:
        return self.json("GET", "/v1/quota")

    def submissions(self) -> list[dict]:
        return self.json("GET", "/v1/submissions")["submissions"]

    def submission(self, submission_id: str) -> dict:
        return self.json("GET", f"/v1/submissions/{submission_id}")

    def set_public(self, submission_id: str) -> dict:
        return self.json("POST", f"/v1/submissions/{submission_id}/public")

    def leaderboard(self, track: str) -> dict:
        return self.json("GET", f"/v1/leaderboard/{track}")

    def challenge(self) -> dict:
        return self.json("GET", "/v1/challenge")

    def submit(self, path: str | Path, track: str,
               progress: Callable[[int, int], None] | None = None) -> dict:
        """Upload ``path`` to ``track``; ``progress(sent, total)`` after every chunk."""
        path = Path(path)
        boundary = "mfr-" + secrets.token_hex(12)
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"track\"\r\n\r\n"
                f"{track}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"{path.name}\"\r\nContent-Type: application/zip\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = path.stat().st_size
        total = len(head) + size + len(tail)

        def body() -> Iterator[bytes]:
            yield head
            sent = 0
            with open(path, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    sent += len(chunk)
                    yield chunk
                    if progress:
                        progress(sent, size)
            yield tail

        return self.json("POST", "/v1/submissions", content=body(), headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(total)})

    def follow(self, submission_id: str, on_change: Callable[[dict], None] | None = None,
               interval: float = 1.0, timeout: float | None = None) -> dict:
        """Poll a submission until it is scored, rejected, failed or cancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            current = self.submission(submission_id)
            seen = (current["state"], str(current.get("progress")))
            if seen != last and on_change:
                on_change(current)
            last = seen
            if current["state"] in TERMINAL:
                return current
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"submission {submission_id} still {current['state']} "
                                   f"after {timeout:.0f}s")
            time.sleep(interval)

    # --- organisers -------------------------------------------------------------
    def admin(self, method: str, path: str, **kwargs) -> httpx.Response:
        return self.request(method, f"/v1/admin{path}", **kwargs)
