"""The connection pool: created closed, opened at start-up (STYLE.md).

It outlives PostgreSQL restarts: a connection is checked when it is handed out
(one that broke while idle in the pool is dropped, not given to a request),
connecting gives up after ``CONNECT_TIMEOUT_S``, and a failed reconnection
gives up after ``RECONNECT_TIMEOUT_S`` rather than five minutes of growing
back-off, so the next request (the readiness ping, every second) starts a
fresh attempt and the pool is whole again within seconds of the server's return.
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from mfr.settings import DatabaseSettings

CONNECT_TIMEOUT_S = 5  # libpq's connect_timeout (whole seconds), unless the URL sets one
RECONNECT_TIMEOUT_S = 10.0
PING_TIMEOUT_S = 1.5  # under mfr.health's 2 s, so the reason is the pool's, not "no answer"


def make_pool(url: str, min_size: int = 1, max_size: int = 8, name: str = "mfr",
              schema: str | None = None, timeout: float = 30.0) -> ConnectionPool:
    """A closed pool; call ``.open(wait=True)`` at start-up.

    ``schema`` sets the search_path of every connection (tests use one schema each).
    """
    kwargs: dict = {"row_factory": dict_row}
    if schema:
        kwargs["options"] = f"-c search_path={schema}"
    if "connect_timeout" not in conninfo_to_dict(url):
        kwargs["connect_timeout"] = CONNECT_TIMEOUT_S
    return ConnectionPool(url, min_size=min_size, max_size=max_size, kwargs=kwargs,
                          open=False, name=name, check=ConnectionPool.check_connection,
                          reconnect_timeout=RECONNECT_TIMEOUT_S, timeout=timeout)


def open_pool(settings: DatabaseSettings, name: str, max_size: int | None = None) -> ConnectionPool:
    """A process's pool, sized by the settings, opening in the background: the process starts
    while the database is still coming up, and reports not-ready (``ping``) until it answers."""
    pool = make_pool(settings.database_url.get_secret_value(), settings.db_pool_min,
                     max_size or settings.db_pool_max, name, timeout=settings.db_pool_timeout_s)
    pool.open(wait=False)
    return pool


def listening(pool: ConnectionPool, channel: str) -> psycopg.Connection:
    """A connection of its own, outside the pool (it stays open for notifications), that
    LISTENs on ``channel`` (a constant name, never user input)."""
    conn = psycopg.connect(pool.conninfo, autocommit=True, **pool.kwargs)
    conn.execute(f"LISTEN {channel}")
    return conn


def ping(pool: ConnectionPool) -> bool:
    """PostgreSQL answers through the pool (a readiness check: bounded, never hangs)."""
    with pool.connection(timeout=PING_TIMEOUT_S) as conn:
        conn.execute("SELECT 1")
    return True


def connect(url: str, schema: str | None = None) -> psycopg.Connection:
    options = f"-c search_path={schema}" if schema else ""
    return psycopg.connect(url, row_factory=dict_row, options=options, autocommit=True)


def row_field(name: str) -> property:
    """A read-only attribute that reads ``self.row[name]`` (views over a fetched row)."""
    return property(lambda self: self.row[name], doc=f"the row's {name!r}")
