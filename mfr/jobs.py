"""What the job APIs of the services share (the scorer's and the embedder's): job ids, and
watching a job's row until it ends."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Hashable, Iterator
from typing import TypeVar

from mfr.errors import Conflict, InvalidInput
from mfr.logs import get_logger

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A watcher hears from us at least this often, even when nothing changed (ETA moves).
#: The states of an embedding or scoring job: still wanted, and ended.
ACTIVE = ("queued", "running")
ENDED = ("done", "failed", "cancelled")
WATCH_HEARTBEAT_S = 5.0
V = TypeVar("V")
log = get_logger("mfr.jobs")


class InjectedFault(RuntimeError):
    """A failure asked for by a worker's fault-injection setting (tests only)."""


def check_job_id(job_id: str) -> None:
    if not JOB_ID.match(job_id):
        raise InvalidInput("job_id must be 1-128 characters of A-Z a-z 0-9 . _ - "
                           "starting with a letter or digit", code="job_id_invalid")


def watch(read: Callable[[], V], seen: Callable[[V], Hashable], ended: Callable[[V], bool],
          still_wanted: Callable[[], bool], poll_s: float) -> Iterator[V]:
    """``read()`` now, then on every change of ``seen(...)`` (and every few seconds), until
    ``ended(...)`` or the watcher goes away. Polling: the tables are the truth, and a watcher
    reconnecting to another replica sees the same job."""
    last_seen = None
    last_sent = 0.0
    while still_wanted():
        view = read()
        fingerprint = seen(view)
        if fingerprint != last_seen or time.monotonic() - last_sent >= WATCH_HEARTBEAT_S:
            yield view
            last_seen, last_sent = fingerprint, time.monotonic()
        if ended(view):
            return
        time.sleep(poll_s)


def insert_once(conn, table: str, values: dict) -> bool:
    """Insert a job row unless its id exists (True when inserted). The same id under another
    request (``values["request_sha256"]`` differs) is a Conflict: SubmitJob is idempotent,
    never a silent replacement."""
    from psycopg import sql

    inserted = conn.execute(sql.SQL(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (id) DO NOTHING RETURNING id").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(map(sql.Placeholder, values))), values).fetchone()
    if inserted:
        return True
    existing = conn.execute(sql.SQL("SELECT request_sha256 FROM {} WHERE id = %s").format(
        sql.Identifier(table)), (values["id"],)).fetchone()
    if existing["request_sha256"] != values["request_sha256"]:
        raise Conflict(f"job {values['id']} exists with another request", code="job_exists")
    return False


def end_job(pool, book, deferrer, job_id: str, state: str, code: str = "",
            message: str = "") -> bool:
    """Fail or cancel an active job (``book.stop``) and drop its waiting queue tasks
    (``deferrer.cancel``), in one transaction; False when the job had ended already."""
    with pool.connection() as conn, conn.transaction():
        pending = book.stop(conn, job_id, state, code, message)
        if pending is None:
            return False
        dropped = deferrer.cancel(conn, pending)
    log.info("job ended", job_id=job_id, state=state, error_code=code or None,
             error=message or None, tasks_dropped=dropped)
    return True
