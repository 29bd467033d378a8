"""Regenerate mfr/db/schema.snapshot: migrate a throw-away PostgreSQL, describe the schema.

    python scripts/schema_snapshot.py

Run it after adding a migration; tests/integration/test_database.py compares.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from cli.stack.ports import free_port
from cli.stack.postgres import LocalPostgres
from mfr.db.migrate import migrate, schema_snapshot

SNAPSHOT = Path(__file__).resolve().parent.parent / "mfr" / "db" / "schema.snapshot"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        postgres = LocalPostgres(Path(tmp) / "data", free_port())
        url = postgres.start()
        try:
            schema = f"snapshot_{uuid.uuid4().hex[:8]}"
            migrate(url, schema, log=print)
            SNAPSHOT.write_text(schema_snapshot(url, schema))
        finally:
            postgres.stop()
    print(f"wrote {SNAPSHOT}")


if __name__ == "__main__":
    main()
