"""``participants``: sign-up, lookup by token hash, the organisation shown.

Only the token's SHA-256 is stored (the gateway makes and hashes tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from mfr.errors import Conflict


@dataclass(frozen=True)
class Participant:
    id: str
    name: str
    organisation: str
    hide_organisation: bool
    baseline: bool

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "organisation": self.organisation,
                "hide_organisation": self.hide_organisation, "baseline": self.baseline}


def create(pool: ConnectionPool, name: str, organisation: str, hide_organisation: bool,
           baseline: bool, token_hash: str) -> str:
    """The new participant's id."""
    with pool.connection() as conn:
        try:
            row = conn.execute(
                "INSERT INTO participants (name, organisation, hide_organisation, is_baseline,"
                " token_hash) VALUES (%s, %s, %s, %s, %s) RETURNING id::text AS id",
                (name, organisation, hide_organisation, baseline, token_hash)).fetchone()
        except pg_errors.UniqueViolation:  # a 256-bit token collided: astronomically unlikely
            raise Conflict("please retry", code="token_collision") from None
    return row["id"]


def by_token_hash(pool: ConnectionPool, token_hash: str) -> Participant | None:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT id::text AS id, name, organisation, hide_organisation, is_baseline"
            " FROM participants WHERE token_hash = %s", (token_hash,)).fetchone()
    if row is None:
        return None
    return Participant(row["id"], row["name"], row["organisation"], row["hide_organisation"],
                       row["is_baseline"])


def set_organisation(pool: ConnectionPool, participant_id: str, organisation: str,
                     hide: bool) -> None:
    with pool.connection() as conn:
        conn.execute("UPDATE participants SET organisation = %s, hide_organisation = %s"
                     " WHERE id = %s", (organisation, hide, participant_id))


def lock(conn, participant_id: str) -> None:
    """Inside a transaction: serialise this participant's quota and public-entry changes."""
    conn.execute("SELECT 1 FROM participants WHERE id = %s FOR UPDATE", (participant_id,))
