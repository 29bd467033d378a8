"""Dispatcher leases in PostgreSQL: who drives which submission, until when.

A dispatcher *claims* the oldest pending submission whose lease is free or has
lapsed (``FOR UPDATE SKIP LOCKED``, so dispatchers never wait on each other),
renews the lease while it works, and every write it makes is guarded by the
lease and the run it claimed: when an organiser cancels or re-runs the
submission, or the lease lapsed and another dispatcher took over, the guarded
write touches nothing and the dispatcher lets go (:class:`LeaseLost`). A
dispatcher that crashes simply stops renewing; the lease lapses and another one
resumes at the recorded state, which is safe because every stage is idempotent
(the validator is pure, embedder and scorer jobs are keyed by submission and run).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from mfr.db.pool import row_field
from mfr.records import events
from mfr.records.states import PENDING

_CLAIM = """
    WITH next AS (
        SELECT s.id FROM submissions s
        WHERE s.state = ANY(%(pending)s)
          AND (s.lease_until IS NULL OR s.lease_until < now())
          AND (s.next_attempt_at IS NULL OR s.next_attempt_at <= now())
        -- Fair share: first the participants with the fewest submissions being driven
        -- now, so one participant's queue (or a model hanging in validation) never
        -- holds every dispatcher slot while another participant waits.
        ORDER BY (SELECT count(*) FROM submissions o
                  WHERE o.participant_id = s.participant_id AND o.lease_until >= now()
                    AND o.state = ANY(%(pending)s)),
                 s.created_at, s.id
        LIMIT 1 FOR UPDATE OF s SKIP LOCKED)
    UPDATE submissions s SET lease_owner = %(owner)s,
           lease_until = now() + make_interval(secs => %(lease_s)s),
           attempts = s.attempts + 1, next_attempt_at = NULL
    FROM next WHERE s.id = next.id
    RETURNING s.id::text AS id, s.participant_id::text AS participant_id, s.track_id, s.state,
              s.run, s.attempts, s.retries, s.upload_bucket, s.upload_key, s.upload_sha256,
              s.upload_size, s.validation, s.model_key, s.model_sha256, s.features_key,
              s.model_size_mb, s.latency_ms, s.request_id
"""


# Every write of a dispatcher: only while it holds the lease on the run and state it claimed.
_GUARDED = sql.SQL("UPDATE submissions SET {} WHERE id = %(id)s AND lease_owner = %(owner)s"
                   " AND run = %(run)s AND state = %(was)s")


#: A column value meaning "the database's now()" (one clock for every timestamp).
NOW = object()


def _assignments(columns: dict) -> list[sql.Composable]:
    return [sql.SQL("{} = now()").format(sql.Identifier(name)) if value is NOW else
            sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name))
            for name, value in columns.items()]


def _params(columns: dict) -> dict:
    return {k: Jsonb(v) if isinstance(v, dict | list) else v for k, v in columns.items()
            if v is not NOW}


class LeaseLost(Exception):
    """The submission was cancelled, re-run or taken over: stop driving it."""


@dataclass
class Claim:
    """A submission this dispatcher drives, as of its last guarded write."""

    row: dict
    owner: str
    lost: threading.Event = field(default_factory=threading.Event)
    #: Called on let_go, e.g. to cut the calls in flight for this submission.
    on_let_go: list[Callable[[], None]] = field(default_factory=list)

    id = row_field("id")
    state = row_field("state")
    run = row_field("run")

    @property
    def job_id(self) -> str:
        """Embedder and scorer job id: the submission id, with the run after the first and
        the platform retry after a job failed on our side (the failed job stays on record)."""
        run = "" if self.run == 1 else f"-run{self.run}"
        retry = f"-retry{self.row['retries']}" if self.row.get("retries") else ""
        return f"{self.id}{run}{retry}"

    def let_go(self) -> None:
        self.lost.set()
        for action in list(self.on_let_go):
            action()


class Leases:
    def __init__(self, pool: ConnectionPool, owner: str, lease_s: float) -> None:
        self.pool = pool
        self.owner = owner
        self.lease_s = lease_s

    def claim(self) -> Claim | None:
        with self.pool.connection() as conn:
            row = conn.execute(_CLAIM, {"pending": list(PENDING), "owner": self.owner,
                                        "lease_s": self.lease_s}).fetchone()
        return Claim(row, self.owner) if row else None

    def renew(self, claim: Claim) -> bool:
        with self.pool.connection() as conn:
            renewed = conn.execute(
                "UPDATE submissions SET lease_until = now() + make_interval(secs => %s)"
                " WHERE id = %s AND lease_owner = %s AND run = %s AND state = ANY(%s)",
                (self.lease_s, claim.id, self.owner, claim.run, list(PENDING))).rowcount
        return bool(renewed)

    def advance(self, claim: Claim, state: str, detail: dict | None = None, **columns) -> None:
        """Move to ``state`` (writing ``columns``) and record the event; LeaseLost if not ours."""
        sets = [sql.SQL("state = %(state)s"), sql.SQL("updated_at = now()"), *_assignments(columns)]
        if state not in PENDING:
            sets += [sql.SQL("lease_owner = NULL"), sql.SQL("lease_until = NULL"),
                     sql.SQL("progress = NULL")]
        params = _params(columns)
        params.update(state=state, id=claim.id, owner=self.owner, run=claim.run, was=claim.state)
        with self.pool.connection() as conn, conn.transaction():
            changed = conn.execute(_GUARDED.format(sql.SQL(", ").join(sets)), params).rowcount
            if not changed:
                raise LeaseLost(claim.id)
            events.add(conn, claim.id, state, {"run": claim.run, "by": self.owner,
                                               **(detail or {})})
        claim.row = {**claim.row, **{k: v for k, v in columns.items() if v is not NOW},
                     "state": state}

    def note(self, claim: Claim, **columns) -> None:
        """Write columns (progress, result key) without changing state; LeaseLost if not ours."""
        sets = [sql.SQL("updated_at = now()"), *_assignments(columns)]
        params = _params(columns)
        params.update(id=claim.id, owner=self.owner, run=claim.run, was=claim.state)
        with self.pool.connection() as conn:
            changed = conn.execute(_GUARDED.format(sql.SQL(", ").join(sets)), params).rowcount
        if not changed:
            raise LeaseLost(claim.id)

    def release(self, claim: Claim, retry_in_s: float = 0.0, reason: str = "", *,
                counted: bool = True, platform_retry: bool = False) -> bool:
        """Give the submission back (for another try after ``retry_in_s``).

        ``counted=False``: this claim was no attempt (the dispatcher is stopping), so it
        does not use up one of the submission's attempts. ``platform_retry``: a job failed
        on our side; the next claim starts a new one (:attr:`Claim.job_id`).
        """
        with self.pool.connection() as conn, conn.transaction():
            released = conn.execute(
                "UPDATE submissions SET lease_owner = NULL, lease_until = NULL,"
                " next_attempt_at = now() + make_interval(secs => %s),"
                " attempts = attempts - %s, retries = retries + %s"
                " WHERE id = %s AND lease_owner = %s AND run = %s",
                (retry_in_s, 0 if counted else 1, 1 if platform_retry else 0, claim.id,
                 self.owner, claim.run)).rowcount
            if released and reason:
                events.add(conn, claim.id, claim.state, {
                    "retry_in_s": round(retry_in_s, 1), "reason": reason,
                    "attempt": claim.row["attempts"],
                    **({"platform_retry": claim.row["retries"] + 1} if platform_retry else {})})
        return bool(released)

    def current(self, submission_id: str) -> dict | None:
        """The submission's state and run now (whoever holds it)."""
        with self.pool.connection() as conn:
            return conn.execute("SELECT state, run FROM submissions WHERE id = %s",
                                (submission_id,)).fetchone()
