"""Helpers shared by the participant-journey tests (ranker, gateway, dispatcher)."""

from __future__ import annotations

import hashlib
import io
import secrets
import stat
import threading
import time
import zipfile
from datetime import UTC, datetime
from fractions import Fraction
from typing import Self

from psycopg.types.json import Jsonb

T0 = datetime(2021, 7, 1, 12, 0, tzinfo=UTC)


def add_participant(conn, name: str, organisation: str = "", hidden: bool = False,
                    baseline: bool = False) -> tuple[str, str]:
    token = secrets.token_urlsafe(16)
    row = conn.execute(
        "INSERT INTO participants (name, organisation, hide_organisation, is_baseline, token_hash)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id::text AS id",
        (name, organisation, hidden, baseline, hashlib.sha256(token.encode()).hexdigest()),
    ).fetchone()
    conn.commit()
    return row["id"], token


def add_submission(conn, participant_id: str, track: str = "A", state: str = "scoring",
                   created_at: datetime = T0, challenge: str = "iccv21-mfr",
                   scores: dict | None = None, ranking_exact: str | None = None) -> str:
    row = conn.execute(
        "INSERT INTO submissions (participant_id, challenge_id, track_id, state, created_at,"
        " quota_day, upload_bucket, upload_key, upload_sha256, upload_size, scores, ranking_exact,"
        " ranking_score)"
        " VALUES (%s, %s, %s, %s, %s, %s, 'b', 'k', 's', 1, %s, %s, %s) RETURNING id::text AS id",
        (participant_id, challenge, track, state, created_at, created_at.date(),
         Jsonb(scores) if scores else None, ranking_exact,
         None if ranking_exact is None else float(Fraction(ranking_exact))),
    ).fetchone()
    conn.commit()
    return row["id"]


def hold_lease(pool, submission_id: str, owner: str = "test-dispatcher"):
    """Take the lease on a pending submission as a dispatcher's claim would (state kept):
    (leases, claim). AssertionError when it is not pending (no claim would take it)."""
    from mfr.records.leases import Claim, Leases
    from mfr.records.states import PENDING

    with pool.connection() as conn:
        row = conn.execute(
            "UPDATE submissions SET lease_owner = %s, lease_until = now() + interval '5 minutes'"
            " WHERE id = %s AND state = ANY(%s) RETURNING id::text AS id, state, run",
            (owner, submission_id, list(PENDING))).fetchone()
    assert row is not None, f"submission {submission_id} is not pending"
    return Leases(pool, owner, 300), Claim(row, owner)


def record_result(pool, challenge, submission_id: str, scores: dict,
                  model_size_mb: float | None = None, latency_ms: float | None = None):
    """Record a result as the dispatcher does: the scores cross the wire codec (the scorer
    encodes, the dispatcher decodes), then ``mfr.records.results.record`` writes them in the
    guarded UPDATE of a lease on the run. Returns the exact ranking score."""
    from mfr.ranking import wire
    from mfr.records import results

    if model_size_mb is not None or latency_ms is not None:  # what validation recorded
        with pool.connection() as conn:
            conn.execute("UPDATE submissions SET model_size_mb = %s, latency_ms = %s"
                         " WHERE id = %s", (model_size_mb, latency_ms, submission_id))
    leases, claim = hold_lease(pool, submission_id)
    sent = {pid: wire.from_proto(wire.to_proto(pid, score)) for pid, score in scores.items()}
    return results.record(leases, claim, challenge, sent)


def score(accepted: int, genuine: int, far: float = 1e-4) -> dict:
    return {"tar": accepted / genuine, "far": far, "threshold": 0.25, "genuine": genuine,
            "impostor": 10_000, "genuine_accepted": accepted, "impostors_accepted": 1,
            "roc": [{"far": 0.1, "tar": min(1.0, accepted / genuine + 0.2), "threshold": 0.1,
                     "exact": True},
                    {"far": far, "tar": accepted / genuine, "threshold": 0.25, "exact": True}]}


def built_in_scores(mask: tuple[int, int], mr_all: tuple[int, int]) -> dict:
    """Scores for every protocol of the built-in challenge (races and children copy MR-All)."""
    out = {"mask": score(*mask)}
    for pid in ("children",):
        out[pid] = score(*mr_all)
    for pid in ("african", "caucasian", "south-asian", "east-asian", "mr-all"):
        out[pid] = score(*mr_all, far=1e-6)
    return out


def model_zip(name: str = "model.onnx", payload: bytes = b"onnx-bytes" * 100,
              extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in {name: payload, **(extra or {})}.items():
            info = zipfile.ZipInfo(member, date_time=(2021, 7, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | 0o644) << 16  # what `zip model.zip model.onnx` writes
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


class FakeClock:
    """An injectable clock: starts at ``now``, moves only when told."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class ServerThread:
    """A real uvicorn server for an ASGI app, on a free port, in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        from cli.stack.ports import free_port

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_config=None, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def challenge_toml(opens: datetime | None = None, closes: datetime | None = None,
                   max_model_mb: float | None = None, timezone: str | None = None,
                   daily_limit: int | None = None) -> str:
    """The built-in challenge's TOML with its window, size limit, time zone or limit changed."""
    import re
    from importlib import resources

    text = resources.files("mfr.builtin").joinpath("iccv21-mfr.toml").read_text("utf-8")

    def stamp(value: datetime) -> str:
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    if opens is not None:
        text = re.sub(r"(?m)^opens = .*$", f"opens = {stamp(opens)}", text)
    if closes is not None:
        text = re.sub(r"(?m)^closes = .*$", f"closes = {stamp(closes)}", text)
    if max_model_mb is not None:
        text = re.sub(r"(?m)^max_model_mb = .*$", f"max_model_mb = {max_model_mb}", text)
    if timezone is not None:
        text = re.sub(r'(?m)^timezone = .*$', f'timezone = "{timezone}"', text)
    if daily_limit is not None:
        text = re.sub(r"(?m)^daily_submission_limit = .*$",
                      f"daily_submission_limit = {daily_limit}", text)
    return text


def make_challenge(**changes):
    import tomllib

    from mfr.challenge import parse_challenge

    return parse_challenge(tomllib.loads(challenge_toml(**changes)), "test")


def gateway_app(pool, store, now: datetime, admin_token: str):
    """The gateway app of the built-in-like challenge at a fake ``now``, and the challenge
    results are recorded for: (app, challenge, clock)."""
    from gateway.app import create_app

    challenge = make_challenge()
    clock = FakeClock(now)
    return create_app(pool, store, challenge, clock=clock, admin_token=admin_token), challenge, clock


def add_scored(pool, challenge, participant_id: str, mask: tuple[int, int],
               mr_all: tuple[int, int], minutes: int = 0) -> str:
    """A submission made ``minutes`` after T0 and scored (Mask and MR-All as given)."""
    from datetime import timedelta

    with pool.connection() as conn:
        sid = add_submission(conn, participant_id, created_at=T0 + timedelta(minutes=minutes))
    record_result(pool, challenge, sid, built_in_scores(mask, mr_all), model_size_mb=91.7,
                  latency_ms=1.856)
    return sid
