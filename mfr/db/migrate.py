"""Schema migrations: numbered SQL files applied in order, once, under a lock.

Why not Alembic: it needs SQLAlchemy, which nothing else here uses; plain
numbered SQL files with a version table and an advisory lock are the whole of
what we need, and they read well in review. Migrations run as their own step
(``mfr db migrate``, a Kubernetes Job), never implicitly at service start.

A migration may also be a Python module ``NNNN_name.py`` with ``apply(conn)``,
for SQL that ships inside a library rather than in this repository (the
procrastinate task queue's schema, ``0003_procrastinate.py``). It runs in the
same transaction, with the same search_path, as a SQL file would.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

LOCK_ID = 0x6D6672  # "mfr": one migrator at a time


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    module: str = ""  # a Python migration: the module whose apply(conn) runs

    def apply(self, conn: psycopg.Connection) -> None:
        if self.module:
            importlib.import_module(self.module).apply(conn)
        else:
            conn.execute(self.sql)


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("mfr.db.migrations").iterdir():
        if not entry.name[:1].isdigit():
            continue
        version = int(entry.name.split("_", 1)[0])
        if entry.name.endswith(".sql"):
            found.append(Migration(version, entry.name, entry.read_text("utf-8")))
        elif entry.name.endswith(".py"):
            found.append(Migration(version, entry.name, "",
                                   f"mfr.db.migrations.{entry.name.removesuffix('.py')}"))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


def target_schema(conn: psycopg.Connection) -> str:
    """The schema a connection's unqualified tables go to: the first of its search_path.

    So a URL carrying ``options=-c search_path=X`` (what the services will use) is
    migrated into X, even before X exists.
    """
    first = conn.execute("SHOW search_path").fetchone()[0].split(",")[0].strip().strip('"')
    return "public" if first in ("", "$user") else first


def migrate(url: str, schema: str | None = None, log=print) -> list[str]:
    """Apply pending migrations to ``schema`` (default: the URL's search_path); returns names."""
    applied: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        schema = schema or target_schema(conn)
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))
        try:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in migrations():
                if migration.version in done:
                    continue
                with conn.transaction():
                    migration.apply(conn)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                log(f"applied {migration.name}")
                applied.append(migration.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_ID,))
    return applied


SNAPSHOT_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '')
        FROM information_schema.columns WHERE table_schema = %(schema)s
        ORDER BY table_name, column_name""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = %(schema)s::regnamespace
        ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = %(schema)s
        ORDER BY 1, 2""",
}


def schema_snapshot(url: str, schema: str = "public") -> str:
    """A normalised text description of a schema (tables, columns, constraints, indexes)."""
    lines: list[str] = []
    with psycopg.connect(url) as conn:
        for section, query in SNAPSHOT_QUERIES.items():
            lines.append(f"## {section}")
            for row in conn.execute(query, {"schema": schema}):
                text = " | ".join(str(v) for v in row)
                lines.append(text.replace(f"{schema}.", ""))
    return "\n".join(lines) + "\n"
