"""``mfr admin``: the organisers' commands against a running gateway.

The organisers' token is ``--admin-token`` or ``MFR_ADMIN_TOKEN``; without
either, the one ``mfr up`` made in ``--state-dir`` (``credentials.json``) is used.
The gateway is ``--gateway`` or ``MFR_GATEWAY`` (``ClientSettings``, cli/settings.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cli.errors import reports_errors
from cli.participant import board_table, emit, json_option, pct, stdout_console


def _admin_token(explicit: str | None, state_dir: Path) -> str:
    from mfr.errors import PermissionDenied

    if explicit:
        return explicit
    credentials = state_dir / "credentials.json"
    if credentials.exists():
        return json.loads(credentials.read_text())["admin_token"]
    raise PermissionDenied("no organisers' token: set MFR_ADMIN_TOKEN or --admin-token "
                           f"(or run where `mfr up --state-dir {state_dir}` keeps its state)",
                           code="no_admin_token")


@click.group()
@click.option("--gateway", help="Gateway URL (default: MFR_GATEWAY, else http://127.0.0.1:8000).")
@click.option("--admin-token", help="The organisers' token (default: MFR_ADMIN_TOKEN).")
@click.option("--state-dir", default=Path(".mfr"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Where `mfr up` keeps credentials.json (used when no token is given).")
@click.pass_context
def admin(ctx: click.Context, gateway: str | None, admin_token: str | None, state_dir: Path) -> None:
    """Organiser commands: queue, re-run, cancel, baselines, freeze, export."""
    from cli.settings import ClientSettings, secret_value

    settings = ClientSettings()
    ctx.obj = {"gateway": gateway or settings.gateway,
               "token": admin_token or secret_value(settings.admin_token), "state_dir": state_dir}


def _api(ctx: click.Context):
    from cli.client import GatewayClient

    obj = ctx.obj
    return GatewayClient(obj["gateway"], _admin_token(obj["token"], obj["state_dir"]))


@admin.command()
@click.option("--state", "states", multiple=True, help="Only these states (repeatable).")
@click.option("--track", default=None)
@click.option("--limit", default=50, show_default=True)
@json_option
@click.pass_context
@reports_errors
def queue(ctx: click.Context, states: tuple[str, ...], track: str | None, limit: int,
          as_json: bool) -> None:
    """Submissions, newest first, with their states and leases."""
    from rich.table import Table

    params: dict = {"limit": limit, "state": list(states)}
    if track:
        params["track"] = track
    with _api(ctx) as api:
        rows = api.admin("GET", "/submissions", params=params).json()["submissions"]
    if as_json:
        emit({"submissions": rows})
        return
    table = Table(title="submissions")
    table.add_column("id", no_wrap=True, min_width=36)
    for column in ("participant", "track", "state", "run", "score %", "error", "lease"):
        table.add_column(column)
    for s in rows:
        error = " ".join(e["code"] for e in s["errors"])
        table.add_row(s["id"], s["participant"] + (" [baseline]" if s["baseline"] else ""),
                      s["track"], s["state"], str(s["run"]), pct(s["ranking_score"]), error,
                      s["lease_owner"] or "")
    stdout_console().print(table)


def _submission_command(name: str, what: str, doc: str) -> click.Command:
    """``mfr admin rerun|cancel ID``: one POST to ``/v1/admin/submissions/ID/<name>``."""

    @admin.command(name=name, help=doc)
    @click.argument("submission_id")
    @json_option
    @click.pass_context
    @reports_errors
    def command(ctx: click.Context, submission_id: str, as_json: bool) -> None:
        with _api(ctx) as api:
            row = api.admin("POST", f"/submissions/{submission_id}/{name}").json()
        if as_json:
            emit(row)
        else:
            click.echo(f"submission {row['id']}: {row['state']} (run {row['run']}) — {what}")

    return command


rerun = _submission_command("rerun", "queued again",
                            "Evaluate a finished submission again, from its upload.")
cancel = _submission_command("cancel", "cancelled",
                             "Stop a submission that is still being evaluated.")


@admin.command()
@click.argument("models", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--track", "tracks", multiple=True, default=("A",), show_default=True,
              help="Track(s) to publish on (repeatable).")
@click.option("--organisation", default="organisers", show_default=True)
@click.option("--follow/--no-follow", default=False, help="Wait until each is scored.")
@json_option
@click.pass_context
@reports_errors
def baselines(ctx: click.Context, models: tuple[Path, ...], tracks: tuple[str, ...],
              organisation: str, follow: bool, as_json: bool) -> None:
    """Publish baseline models (zips, or folders of zips): one baseline participant per model.

    Baselines are exempt from the daily limit and the submission window, and
    are marked on the leaderboard.
    """
    zips = [z for m in models for z in (sorted(m.glob("*.zip")) if m.is_dir() else [m])]
    if not zips:
        raise click.UsageError("no .zip found in the given paths")
    published = publish_baselines(_api(ctx), zips, tracks, organisation, follow)
    if as_json:
        emit({"baselines": published})
        return
    for item in published:
        click.echo(f"{item['name']:<28} track {item['track']}  submission {item['submission_id']}"
                   + (f"  {item['state']}" if "state" in item else ""))


def publish_baselines(api, zips: list[Path], tracks, organisation: str, follow: bool = False,
                      names: dict[str, str] | None = None) -> list[dict]:
    """Create a baseline participant per model and submit it to each track."""
    published = []
    with api:
        for path in zips:
            name = (names or {}).get(path.name) or path.stem
            created = api.admin("POST", "/participants", json={
                "name": name, "organisation": organisation, "hide_organisation": False}).json()
            for track in tracks:
                sub = _submit_as(api, created["token"], path, track)
                item = {"name": name, "track": track, "participant_id": created["id"],
                        "submission_id": sub["id"]}
                if follow:
                    item["state"] = _follow_as(api, created["token"], sub["id"])["state"]
                published.append(item)
    return published


def _submit_as(api, token: str, path: Path, track: str) -> dict:
    from cli.client import GatewayClient

    with GatewayClient(api.url, token) as as_baseline:
        return as_baseline.submit(path, track)


def _follow_as(api, token: str, submission_id: str) -> dict:
    from cli.client import GatewayClient

    with GatewayClient(api.url, token) as as_baseline:
        return as_baseline.follow(submission_id, timeout=3600)


@admin.command()
@click.option("--track", "tracks", multiple=True, help="Track(s) (default: every track).")
@click.option("--undo", is_flag=True, help="Drop the recorded final board instead.")
@json_option
@click.pass_context
@reports_errors
def freeze(ctx: click.Context, tracks: tuple[str, ...], undo: bool, as_json: bool) -> None:
    """Record the final leaderboard: from then on it never changes (re-runs included)."""

    out = []
    with _api(ctx) as api:
        for track in tracks or [t["id"] for t in api.challenge()["tracks"]]:
            method = "DELETE" if undo else "POST"
            out.append(api.admin(method, f"/leaderboard/{track}/freeze").json())
    if as_json:
        emit({"boards": out})
        return
    console = stdout_console()
    for board in out:
        if undo:
            console.print(f"track {board['track']}: {'unfrozen' if board['unfrozen'] else 'was not frozen'}")
        else:
            console.print(board_table(board, f"track {board['track']} — frozen {board['frozen_at']}"))


@admin.command()
@click.option("--track", required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (default: stdout).")
@click.pass_context
@reports_errors
def export(ctx: click.Context, track: str, fmt: str, out: Path | None) -> None:
    """Export a leaderboard (hidden organisations included) as CSV or JSON."""
    with _api(ctx) as api:
        text = api.admin("GET", f"/leaderboard/{track}/export", params={"format": fmt}).text
    if out:
        out.write_text(text)
        click.echo(f"wrote {out}", err=True)
    else:
        sys.stdout.write(text if fmt == "csv" else json.dumps(json.loads(text), indent=1) + "\n")
