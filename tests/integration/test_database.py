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


def test_mfr_db_migrate_targets_the_schema_of_the_urls_search_path(servers):
    import os
    import subprocess
    import sys
    import uuid
    from urllib.parse import quote

    schema = f"cli_{uuid.uuid4().hex[:10]}"
    url = f"{servers.database_url}?options={quote(f'-c search_path={schema}')}"
    env = {**os.environ, "MFR_DATABASE_URL": url}
    try:
        first = subprocess.run([sys.executable, "-m", "cli.main", "db", "migrate"], env=env,
                               capture_output=True, text=True, timeout=120, check=False)
        assert first.returncode == 0, first.stderr
        assert "applied 0001_participants_submissions.sql" in first.stderr
        with psycopg.connect(servers.database_url) as conn:
            tables = {r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,))}
        assert {"participants", "submissions", "schema_migrations"} <= tables
        again = subprocess.run([sys.executable, "-m", "cli.main", "db", "migrate"], env=env,
                               capture_output=True, text=True, timeout=120, check=False)
        assert again.returncode == 0 and "0 migration(s) applied" in again.stderr
    finally:
        with psycopg.connect(servers.database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_mfr_db_migrate_without_a_database_url_says_which_variable(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MFR_DATABASE_URL"}
    done = subprocess.run([sys.executable, "-m", "cli.main", "db", "migrate"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == "error[config_invalid]: MFR_DATABASE_URL is not set"
