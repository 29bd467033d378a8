"""The procrastinate task queue's schema (jobs, workers, events, their functions).

The scorer's tile queue is procrastinate (docs/scoring-service.md). Its schema
ships inside the installed package (``procrastinate/sql/schema.sql``), so it is
read from there rather than copied: a fresh database always gets the schema of
the library that will use it. Every object is created unqualified, in the
schema being migrated (the search_path), and procrastinate's queries and
functions are unqualified too, so each PostgreSQL schema (one per test) holds
its own queue.

Upgrading procrastinate across a schema change needs a new numbered migration
that applies the package's ``sql/migrations/*.sql`` between the two versions;
tests/integration/test_database.py fails on a fresh schema if the installed
version's tables, columns or indexes differ from mfr/db/schema.snapshot.
"""

from __future__ import annotations

import psycopg
from procrastinate.schema import SchemaManager


def apply(conn: psycopg.Connection) -> None:
    # No parameters: psycopg sends the script as it is ('%' needs no escaping).
    conn.execute(SchemaManager.get_schema())
