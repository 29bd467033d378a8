"""``submissions``: reading rows, the upload's insert, the quota count, the row lock."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from psycopg import sql

from mfr.errors import NotFound
from mfr.faults import MODEL_FAULTS
from mfr.records import events
from mfr.storage import StoredObject

COLUMNS = sql.SQL(
    "s.id::text AS id, s.participant_id::text AS participant_id, s.challenge_id, s.track_id,"
    " s.state, s.created_at, s.updated_at, s.validation, s.scores, s.ranking_score,"
    " s.ranking_exact, s.public, s.error, s.error_code, s.model_size_mb, s.latency_ms, s.run,"
    " s.progress, s.upload_size, s.result_key, s.attempts, s.lease_owner, s.lease_until,"
    " s.embedding, s.request_id, p.name AS participant, p.is_baseline AS baseline")


def valid_id(submission_id: str) -> str:
    """The id in canonical form; a malformed id is simply not found."""
    try:
        return str(uuid.UUID(submission_id))
    except (ValueError, TypeError, AttributeError):
        raise NotFound(f"no submission {submission_id!r}", code="submission_not_found") from None


def get(conn, submission_id: str, participant_id: str | None = None) -> dict:
    """One submission; NotFound when it does not exist or is not ``participant_id``'s."""
    query = sql.SQL("SELECT {} FROM submissions s JOIN participants p ON p.id = s.participant_id"
                    " WHERE s.id = %s").format(COLUMNS)
    params: list = [valid_id(submission_id)]
    if participant_id is not None:
        query += sql.SQL(" AND s.participant_id = %s")
        params.append(participant_id)
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise NotFound(f"no submission {submission_id!r}", code="submission_not_found")
    return row


def find(conn, participant_id: str | None = None, track_id: str | None = None,
         states: list[str] | None = None, limit: int = 100) -> list[dict]:
    """Submissions, newest first, filtered by owner, track and state."""
    where = [sql.SQL("true")]
    params: list = []
    if participant_id:
        where.append(sql.SQL("s.participant_id = %s"))
        params.append(participant_id)
    if track_id:
        where.append(sql.SQL("s.track_id = %s"))
        params.append(track_id)
    if states:
        where.append(sql.SQL("s.state = ANY(%s)"))
        params.append(list(states))
    query = sql.SQL("SELECT {} FROM submissions s JOIN participants p ON p.id = s.participant_id"
                    " WHERE {} ORDER BY s.created_at DESC, s.id LIMIT %s").format(
        COLUMNS, sql.SQL(" AND ").join(where))
    return conn.execute(query, [*params, max(1, min(limit, 1000))]).fetchall()


def lock(conn, submission_id: str, participant_id: str | None = None) -> dict:
    """Inside a transaction: the row's key facts, locked; NotFound as :func:`get`."""
    query = ("SELECT id, participant_id::text AS participant_id, challenge_id, track_id, state,"
             " run, ranking_exact FROM submissions WHERE id = %s")
    params: tuple = (valid_id(submission_id),)
    if participant_id is not None:
        query += " AND participant_id = %s"
        params += (participant_id,)
    row = conn.execute(query + " FOR UPDATE", params).fetchone()
    if row is None:
        raise NotFound(f"no submission {submission_id!r}", code="submission_not_found")
    return row


def create(conn, submission_id: str, participant_id: str, challenge_id: str, track_id: str,
           now: datetime, quota_day: date, upload: StoredObject, filename: str,
           request_id: str | None = None) -> None:
    """Inside the transaction that reserved the quota: the new, queued submission.
    ``request_id``: the upload's, which every process working on it logs."""
    conn.execute(
        "INSERT INTO submissions (id, participant_id, challenge_id, track_id, created_at,"
        " updated_at, quota_day, upload_bucket, upload_key, upload_sha256, upload_size,"
        " request_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (submission_id, participant_id, challenge_id, track_id, now, now, quota_day,
         upload.bucket, upload.key, upload.sha256, upload.size, request_id))
    events.add(conn, submission_id, "queued",
               {"filename": filename, "bytes": upload.size, "sha256": upload.sha256}, at=now)


def count_for_day(conn, challenge_id: str, participant_id: str, day: date) -> dict:
    """A participant's submissions of a day: ``counted`` against the daily limit (all but
    the rejected ones and the platform's failures, :mod:`mfr.faults`) and ``rejected``
    (limited on their own: ``daily_rejected_limit``)."""
    return conn.execute(
        "SELECT count(*) FILTER (WHERE state <> 'rejected' AND NOT (state = 'failed'"
        "   AND coalesce(error_code, '') <> ALL(%s))) AS counted,"
        " count(*) FILTER (WHERE state = 'rejected') AS rejected"
        " FROM submissions WHERE participant_id = %s AND challenge_id = %s AND quota_day = %s",
        (sorted(MODEL_FAULTS), participant_id, challenge_id, day)).fetchone()
