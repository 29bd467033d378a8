"""``mfr serve NAME``: run one service process in the foreground."""

from __future__ import annotations

import importlib

import click

from cli.errors import reports_errors

# service name -> module with a main() function.
ENTRY_POINTS = {
    "validator": "services.validator.server",
    "embedder": "services.embedder.server",
    "embedder-worker": "services.embedder.worker.server",
    "scorer": "services.scorer.server",
    "scorer-worker": "services.scorer.worker.server",
    "ranker": "services.ranker.server",
    "gateway": "gateway.server",
    "dispatcher": "services.dispatcher.server",
}


@click.command()
@click.argument("name", type=click.Choice(sorted(ENTRY_POINTS)))
@reports_errors
def serve(name: str) -> None:
    """Run one service (configured by MFR_* environment variables) until SIGTERM."""
    importlib.import_module(ENTRY_POINTS[name]).main()
