"""Migrations against the real PostgreSQL: snapshot, idempotence, constraints."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from mfr.db.migrate import migrate, schema_snapshot

pytestmark = pytest.mark.integration

SNAPSHOT = Path(__file__).resolve().parents[2] / "mfr" / "db" / "schema.snapshot"


def test_migrated_schema_matches_committed_snapshot(database):
    actual = schema_snapshot(database.url, database.schema)
    expected = SNAPSHOT.read_text()
    assert actual == expected, (
        "the migrated schema differs from mfr/db/schema.snapshot; if the change is intended, "
        "regenerate it: MFR_DATABASE_URL=... mfr db snapshot > mfr/db/schema.snapshot"
    )


def test_migrate_twice_applies_nothing_the_second_time(database):
    assert migrate(database.url, database.schema, log=lambda _l: None) == []


def test_one_public_submission_per_participant_and_track(db_pool):
    with db_pool.connection() as conn:
        pid = conn.execute(
            "INSERT INTO participants (name, token_hash) VALUES ('a', 'h') RETURNING id"
        ).fetchone()["id"]
        insert = (
            "INSERT INTO submissions (participant_id, challenge_id, track_id, quota_day,"
            " upload_bucket, upload_key, upload_sha256, upload_size, public)"
            " VALUES (%s, 'c', 'A', current_date, 'b', 'k', 's', 1, true)"
        )
        conn.execute(insert, (pid,))
        conn.commit()
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, (pid,))
        conn.rollback()


def test_unknown_state_is_refused(db_pool):
    with db_pool.connection() as conn:
        pid = conn.execute(
            "INSERT INTO participants (name, token_hash) VALUES ('a', 'h2') RETURNING id"
        ).fetchone()["id"]
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO submissions (participant_id, challenge_id, track_id, quota_day,"
                " upload_bucket, upload_key, upload_sha256, upload_size, state)"
                " VALUES (%s, 'c', 'A', current_date, 'b', 'k', 's', 1, 'winning')",
                (pid,),
            )
