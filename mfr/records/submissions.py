"""Reading submissions: the rows, their history, and the JSON the HTTP API shows their owner."""

from __future__ import annotations

from psycopg import sql

from mfr.errors import NotFound
from mfr.ranking.scores import SCORE_FIELDS
from mfr.records.results import valid_id

COLUMNS = sql.SQL(
    "s.id::text AS id, s.participant_id::text AS participant_id, s.challenge_id, s.track_id,"
    " s.state, s.created_at, s.updated_at, s.validation, s.scores, s.ranking_score,"
    " s.ranking_exact, s.public, s.error, s.error_code, s.model_size_mb, s.latency_ms, s.run,"
    " s.progress, s.upload_size, s.result_key, s.attempts, s.lease_owner, s.lease_until,"
    " p.name AS participant, p.is_baseline AS baseline")

TERMINAL_STATES = ("scored", "rejected", "failed", "cancelled")


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


def events(conn, submission_id: str) -> list[dict]:
    rows = conn.execute("SELECT at, state, detail FROM submission_events WHERE submission_id = %s"
                        " ORDER BY id", (submission_id,)).fetchall()
    return [{"at": r["at"].isoformat(), "state": r["state"], "detail": r["detail"]} for r in rows]


def errors_of(row: dict) -> list[dict]:
    """Why a submission did not score: the validation codes, or the failure's reason."""
    if row["state"] == "rejected" and row["validation"]:
        return [{"code": e["code"], "message": e["message"]}
                for e in row["validation"].get("errors", [])]
    if row["error"] or row["error_code"]:
        return [{"code": row["error_code"] or "failed", "message": row["error"] or ""}]
    return []


def to_json(row: dict, shown: bool, detail: bool = False) -> dict:
    """The HTTP API's submission (DESIGN.md section 7), for its owner or an organiser."""
    scores = dict(sorted((row["scores"] or {}).items(),
                         key=lambda item: (item[1].get("order", len(row["scores"])), item[0])))
    out = {
        "id": row["id"],
        "track": row["track_id"],
        "state": row["state"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "validation": row["validation"],
        "errors": errors_of(row),
        "scores": {pid: {k: s[k] for k in SCORE_FIELDS} for pid, s in scores.items()},
        "ranking_score": row["ranking_score"],
        "ranking_exact": row["ranking_exact"],
        "public": shown,
        "public_chosen": row["public"],
        "model_size_mb": row["model_size_mb"],
        "latency_ms": row["latency_ms"],
        "progress": row["progress"],
        "run": row["run"],
    }
    if detail:
        out["roc"] = {pid: s.get("roc", []) for pid, s in scores.items()}
        out["tar_exact"] = {pid: s.get("tar_exact") for pid, s in scores.items()}
    return out
