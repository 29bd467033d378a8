"""A submission's life: the states, and the organisers' re-run and cancel.

    queued -> validating -> embedding -> scoring -> scored
                  |             |           |
                  +-> rejected  +-----------+-> failed      (any pending state) -> cancelled

Every change is one UPDATE guarded by the state (and run) it expects, plus a
row in ``submission_events``, in one transaction; a dispatcher whose guarded
UPDATE finds nothing knows the submission was cancelled or re-run meanwhile.
"""

from __future__ import annotations

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from mfr.errors import Conflict
from services.ranker import submissions
from mfr.records.results import valid_id

PENDING = ("queued", "validating", "embedding", "scoring")
TERMINAL = ("scored", "rejected", "failed", "cancelled")

# Everything a run produced; a re-run clears it and starts from the upload.
_RERUN = ("UPDATE submissions SET state = 'queued', run = run + 1, validation = NULL,"
          " model_key = NULL, features_key = NULL, scores = NULL, ranking_score = NULL,"
          " ranking_exact = NULL, model_size_mb = NULL, latency_ms = NULL, error = NULL,"
          " error_code = NULL, progress = NULL, result_key = NULL, scored_at = NULL,"
          " lease_owner = NULL, lease_until = NULL, attempts = 0, next_attempt_at = NULL,"
          " updated_at = now() WHERE id = %s")


def event(conn, submission_id: str, state: str, detail: dict | None = None) -> None:
    conn.execute("INSERT INTO submission_events (submission_id, state, detail) VALUES (%s, %s, %s)",
                 (submission_id, state, Jsonb(detail or {})))


def cancel(pool: ConnectionPool, submission_id: str, by: str = "organiser") -> dict:
    """Stop a pending submission; the dispatcher driving it notices and lets go."""
    with pool.connection() as conn, conn.transaction():
        row = conn.execute("SELECT state FROM submissions WHERE id = %s FOR UPDATE",
                           (valid_id(submission_id),)).fetchone()
        if row is None:
            submissions.get(conn, submission_id)  # raises NotFound
        if row["state"] not in PENDING:
            raise Conflict(f"submission {submission_id} is already {row['state']}",
                           code="not_pending")
        conn.execute("UPDATE submissions SET state = 'cancelled', progress = NULL,"
                     " lease_owner = NULL, lease_until = NULL, error = 'cancelled by the organisers',"
                     " error_code = 'cancelled', updated_at = now() WHERE id = %s", (submission_id,))
        event(conn, submission_id, "cancelled", {"by": by, "was": row["state"]})
        return submissions.get(conn, submission_id)


def rerun(pool: ConnectionPool, submission_id: str, by: str = "organiser") -> dict:
    """Evaluate a finished submission again from its upload, as a new run."""
    with pool.connection() as conn, conn.transaction():
        row = conn.execute("SELECT state, run FROM submissions WHERE id = %s FOR UPDATE",
                           (valid_id(submission_id),)).fetchone()
        if row is None:
            submissions.get(conn, submission_id)
        if row["state"] in PENDING:
            raise Conflict(f"submission {submission_id} is still {row['state']}; cancel it first",
                           code="still_pending")
        conn.execute(_RERUN, (submission_id,))
        event(conn, submission_id, "queued", {"by": by, "rerun": row["run"] + 1,
                                               "was": row["state"]})
        return submissions.get(conn, submission_id)
