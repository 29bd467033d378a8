"""``mfr config [PROCESS]``: the environment variables a process reads, from its settings class.

Without PROCESS: the processes, then every variable once with the processes that read it.
``--json`` prints the same as one document; ``--markdown`` prints docs/configuration.md.
Secrets show no value, only that they are secret (and whether they are required).
"""

from __future__ import annotations

import json

import click

from cli.errors import reports_errors
from cli.settings_doc import PROCESSES, Process, combined, markdown, process, variables

NAMES = [p.name for p in PROCESSES]


@click.command()
@click.argument("name", metavar="[PROCESS]", required=False, type=click.Choice(NAMES))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--markdown", "as_markdown", is_flag=True,
              help="Print the reference of every process (docs/configuration.md).")
@reports_errors
def config(name: str | None, as_json: bool, as_markdown: bool) -> None:
    """List the environment variables PROCESS reads (every process's without it), with
    their defaults and meanings."""
    if as_markdown:
        if name or as_json:
            raise click.UsageError("--markdown prints every process: give no PROCESS, no --json")
        click.echo(markdown(), nl=False)
    elif as_json:
        chosen = [process(name)] if name else list(PROCESSES)
        documents = [_document(p) for p in chosen]
        click.echo(json.dumps(documents[0] if name else {"processes": documents}, indent=1))
    elif name:
        _print_process(process(name))
    else:
        _print_all()


def _document(entry: Process) -> dict:
    return {"name": entry.name, "command": entry.command,
            "settings": entry.settings.replace(":", "."), "about": entry.about,
            "variables": [v.to_json() for v in variables(entry.settings_class())]}


def _print_process(entry: Process) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    for column in ("variable", "type", "default", "meaning"):
        table.add_column(column, no_wrap=column == "variable")
    for v in variables(entry.settings_class()):
        table.add_row(*(Text(cell) for cell in (v.name, v.type, v.shown, v.meaning)))
    _print(Text(f"{entry.name}: {entry.about}"),
           Text(f"command: {entry.command}; settings: {entry.settings.replace(':', '.')}"),
           table)


def _print_all() -> None:
    from rich.table import Table
    from rich.text import Text

    processes = Table(title="processes (mfr config PROCESS: one process's variables)",
                      box=None, pad_edge=False, title_justify="left")
    for column in ("process", "command", "what it is"):
        processes.add_column(column, no_wrap=column == "process")
    for entry in PROCESSES:
        processes.add_row(*(Text(cell) for cell in (entry.name, entry.command, entry.about)))
    table = Table(title="variables", box=None, pad_edge=False, title_justify="left")
    for column in ("variable", "default", "read by", "meaning"):
        table.add_column(column, no_wrap=column == "variable")
    for row in combined():
        table.add_row(*(Text(cell) for cell in (row.name, row.shown, row.readers, row.meaning)))
    _print(processes, "", table)


def _print(*parts) -> None:
    """Rich tables at the terminal's width (220 when piped), without their trailing blanks."""
    from cli.participant import stdout_console

    console = stdout_console()
    with console.capture() as captured:
        for part in parts:
            console.print(part)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))
