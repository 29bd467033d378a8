"""``mfr db migrate`` and ``mfr db snapshot``: schema administration, a step of its own."""

from __future__ import annotations

import click

from cli.errors import reports_errors


@click.group()
def db() -> None:
    """Database administration (MFR_DATABASE_URL)."""


@db.command()
@click.option("--schema", default=None,
              help="PostgreSQL schema to migrate (default: the first of the URL's search_path).")
@reports_errors
def migrate(schema: str | None) -> None:
    """Apply pending migrations."""
    from mfr.db.migrate import migrate as run_migrations
    from mfr.settings import DatabaseSettings

    url = DatabaseSettings().database_url.get_secret_value()
    applied = run_migrations(url, schema, log=lambda line: click.echo(line, err=True))
    click.echo(f"{len(applied)} migration(s) applied; the schema is current.", err=True)


@db.command()
@click.option("--schema", default="public", show_default=True)
def snapshot(schema: str) -> None:
    """Print the normalised schema description that tests compare with mfr/db/schema.snapshot."""
    from mfr.db.migrate import schema_snapshot
    from mfr.settings import DatabaseSettings

    click.echo(schema_snapshot(DatabaseSettings().database_url.get_secret_value(), schema), nl=False)
