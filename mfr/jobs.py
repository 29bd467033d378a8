"""What the job APIs of the services share (the scorer's and the embedder's): job ids, and
watching a job's row until it ends."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Hashable, Iterator
from typing import TypeVar

from mfr.errors import InvalidInput

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A watcher hears from us at least this often, even when nothing changed (ETA moves).
WATCH_HEARTBEAT_S = 5.0
V = TypeVar("V")


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
