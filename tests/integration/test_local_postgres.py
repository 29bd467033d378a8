"""`mfr up`'s PostgreSQL (cli/stack/postgres.py) runs as its settings say: a real server asked."""

from __future__ import annotations

import psycopg
import pytest

from cli.stack.ports import free_port
from cli.stack.postgres import LocalPostgres

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("off", ["1", ""])
def test_the_server_runs_with_fsync_as_mfr_pg_fsync_off_says(monkeypatch, tmp_path, off):
    monkeypatch.setenv("MFR_PG_FSYNC_OFF", off)
    postgres = LocalPostgres(tmp_path / "data", free_port())
    url = postgres.start()
    try:
        with psycopg.connect(url) as conn:
            assert conn.execute("SHOW fsync").fetchone()[0] == ("off" if off else "on")
    finally:
        postgres.stop()
