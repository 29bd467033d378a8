"""Entry point of the ``mfr`` console script.

Subcommands are registered by import path and imported only when invoked, so
``mfr --help`` stays fast and a command never pays for another's imports
(onnxruntime, numpy, grpc).
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command or group.
COMMANDS: dict[str, str] = {
    "score": "cli.score:score",
    "validate": "cli.validate:validate",
    "testset": "cli.testset:testset",
    "embed": "cli.embed:embed",
    "baselines": "cli.baselines:baselines",
    "serve": "cli.serve:serve",
    "db": "cli.db:db",
    "up": "cli.up:up",
    "demo": "cli.demo:demo",
    "signup": "cli.participant:signup",
    "submit": "cli.participant:submit",
    "status": "cli.participant:status",
    "leaderboard": "cli.participant:leaderboard",
    "quota": "cli.participant:quota",
    "admin": "cli.admin:admin",
    "config": "cli.config:config",
}

HELP: dict[str, str] = {
    "score": "Score features offline: exact TAR@FAR for every protocol.",
    "validate": "Check an ONNX model (or model.zip) against a track's rules.",
    "testset": "Import real test images or build a synthetic test set.",
    "embed": "Embed a test set with a model into a feature matrix.",
    "baselines": "Build baseline ONNX models of known quality.",
    "serve": "Run one process (a service, a queue worker, the dispatcher, the gateway).",
    "db": "Database administration (migrations).",
    "up": "Run the whole platform on this machine.",
    "demo": "Run a scaled-down challenge end to end and print the leaderboard.",
    "signup": "Sign up as a participant.",
    "submit": "Upload a model.zip to a track and follow it.",
    "status": "Show your submissions and their states.",
    "leaderboard": "Print a track's leaderboard.",
    "quota": "Show how many submissions are left today.",
    "admin": "Organiser commands (re-run, cancel, baselines, freeze, export).",
    "config": "List the environment variables a process reads, with defaults and meanings.",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(package_name="mfr-platform")
def cli() -> None:
    """MFR: evaluation platform for face-recognition challenges."""


if __name__ == "__main__":
    cli()
