"""The organisers' re-run and cancel (the states are in :mod:`mfr.records.states`).

Every change is one UPDATE guarded by the state (and run) it expects, plus a
row in ``submission_events``, in one transaction; a dispatcher whose guarded
UPDATE finds nothing knows the submission was cancelled or re-run meanwhile.
"""

from __future__ import annotations

from psycopg_pool import ConnectionPool

from mfr.errors import Conflict
from mfr.records import events, submissions
from mfr.records.states import PENDING

# Everything a run produced; a re-run clears it and starts from the upload.
_RERUN = ("UPDATE submissions SET state = 'queued', run = run + 1, validation = NULL,"
          " model_key = NULL, model_sha256 = NULL, features_key = NULL, embedding = NULL,"
          " scores = NULL, ranking_score = NULL, ranking_exact = NULL, model_size_mb = NULL,"
          " latency_ms = NULL, error = NULL, error_code = NULL, progress = NULL,"
          " result_key = NULL, scored_at = NULL, lease_owner = NULL, lease_until = NULL,"
          " attempts = 0, retries = 0, next_attempt_at = NULL, updated_at = now() WHERE id = %s")


def cancel(pool: ConnectionPool, submission_id: str, by: str = "organiser") -> dict:
    """Stop a pending submission; the dispatcher driving it notices and lets go."""
    with pool.connection() as conn, conn.transaction():
        row = submissions.lock(conn, submission_id)
        if row["state"] not in PENDING:
            raise Conflict(f"submission {submission_id} is already {row['state']}",
                           code="not_pending")
        conn.execute("UPDATE submissions SET state = 'cancelled', progress = NULL,"
                     " lease_owner = NULL, lease_until = NULL, error = 'cancelled by the organisers',"
                     " error_code = 'cancelled', updated_at = now() WHERE id = %s", (row["id"],))
        events.add(conn, row["id"], "cancelled", {"by": by, "was": row["state"]})
        return submissions.get(conn, submission_id)


def rerun(pool: ConnectionPool, submission_id: str, by: str = "organiser") -> dict:
    """Evaluate a finished submission again from its upload, as a new run."""
    with pool.connection() as conn, conn.transaction():
        row = submissions.lock(conn, submission_id)
        if row["state"] in PENDING:
            raise Conflict(f"submission {submission_id} is still {row['state']}; cancel it first",
                           code="still_pending")
        conn.execute(_RERUN, (row["id"],))
        events.add(conn, row["id"], "queued", {"by": by, "rerun": row["run"] + 1,
                                                "was": row["state"]})
        return submissions.get(conn, submission_id)
