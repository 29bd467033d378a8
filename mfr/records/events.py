"""``submission_events``: a submission's history, one row per change, written in the
transaction of the change it records."""

from __future__ import annotations

from datetime import datetime

from psycopg.types.json import Jsonb


def add(conn, submission_id: str, state: str, detail: dict | None = None,
        at: datetime | None = None) -> None:
    conn.execute("INSERT INTO submission_events (submission_id, at, state, detail)"
                 " VALUES (%s, coalesce(%s, now()), %s, %s)",
                 (submission_id, at, state, Jsonb(detail or {})))


def history(conn, submission_id: str) -> list[dict]:
    rows = conn.execute("SELECT at, state, detail FROM submission_events WHERE submission_id = %s"
                        " ORDER BY id", (submission_id,)).fetchall()
    return [{"at": r["at"].isoformat(), "state": r["state"], "detail": r["detail"]} for r in rows]
