"""The connection pool: created closed, opened at start-up (STYLE.md)."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from mfr.settings import DatabaseSettings


def make_pool(url: str, min_size: int = 1, max_size: int = 8, name: str = "mfr",
              schema: str | None = None) -> ConnectionPool:
    """A closed pool; call ``.open(wait=True)`` at start-up.

    ``schema`` sets the search_path of every connection (tests use one schema each).
    """
    kwargs: dict = {"row_factory": dict_row}
    if schema:
        kwargs["options"] = f"-c search_path={schema}"
    return ConnectionPool(url, min_size=min_size, max_size=max_size, kwargs=kwargs,
                          open=False, name=name)


def open_pool(settings: DatabaseSettings, name: str, max_size: int | None = None) -> ConnectionPool:
    """A process's pool, sized by the settings, opening in the background: the process starts
    while the database is still coming up, and reports not-ready (``ping``) until it answers."""
    pool = make_pool(settings.database_url.get_secret_value(), settings.db_pool_min,
                     max_size or settings.db_pool_max, name)
    pool.open(wait=False)
    return pool


def listening(pool: ConnectionPool, channel: str) -> psycopg.Connection:
    """A connection of its own, outside the pool (it stays open for notifications), that
    LISTENs on ``channel`` (a constant name, never user input)."""
    conn = psycopg.connect(pool.conninfo, autocommit=True, **pool.kwargs)
    conn.execute(f"LISTEN {channel}")
    return conn


def ping(pool: ConnectionPool) -> bool:
    with pool.connection(timeout=2) as conn:
        conn.execute("SELECT 1")
    return True


def connect(url: str, schema: str | None = None) -> psycopg.Connection:
    options = f"-c search_path={schema}" if schema else ""
    return psycopg.connect(url, row_factory=dict_row, options=options, autocommit=True)


def row_field(name: str) -> property:
    """A read-only attribute that reads ``self.row[name]`` (views over a fetched row)."""
    return property(lambda self: self.row[name], doc=f"the row's {name!r}")
