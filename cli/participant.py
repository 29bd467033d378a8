"""The participant's commands against a running gateway: signup, submit, status, leaderboard, quota.

The gateway is ``--gateway`` or ``MFR_GATEWAY`` (default http://127.0.0.1:8000);
the token is ``--token``, ``MFR_TOKEN``, or the one ``mfr signup`` saved in
``$MFR_CONFIG_DIR/tokens.json`` (default ``~/.config/mfr``, mode 0600) for that
gateway (``ClientSettings``, cli/settings.py). ``--json`` prints one JSON document on
stdout and nothing else.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cli.errors import reports_errors
from cli.settings import ClientSettings, secret_value

TERMINAL_OK = {"scored"}


def _plain(text: object) -> str:
    """Text from the server (others' names, zip entry names) for rich: no markup, no control codes."""
    from rich.markup import escape

    return escape("".join(c for c in str(text) if c.isprintable()))


def _load_tokens(config_dir: Path) -> dict:
    path = config_dir / "tokens.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def save_token(config_dir: Path, gateway: str, token: str) -> Path:
    path = config_dir / "tokens.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens = _load_tokens(config_dir)
    tokens[gateway] = token
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps(tokens, indent=1))
    return path


def client(gateway: str | None, token: str | None = None, need_token: bool = True,
           settings: ClientSettings | None = None):
    """The gateway's client: options first, then ``settings`` (the environment's)."""
    from cli.client import GatewayClient
    from mfr.errors import PermissionDenied

    settings = settings or ClientSettings()
    api = GatewayClient(gateway or settings.gateway)
    api.token = (token or secret_value(settings.token)
                 or _load_tokens(settings.config_dir).get(api.url))
    if need_token and not api.token:
        raise PermissionDenied(f"no token for {api.url}: run `mfr signup` or set MFR_TOKEN",
                               code="no_token")
    return api


_gateway = click.option("--gateway", help="Gateway URL (default: MFR_GATEWAY, else "
                                          "http://127.0.0.1:8000).")


def gateway_option(func):
    func = click.option("--token", help="Your token (default: MFR_TOKEN, else saved by signup).")(func)
    return _gateway(func)


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(func)


def emit(document: object) -> None:
    click.echo(json.dumps(document, indent=1))


def stdout_console():
    """Rich console for tables: the terminal's width, or wide enough when piped."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=220)


def pct(rate: float | None) -> str:
    return "" if rate is None else f"{100 * rate:.3f}"


@click.command()
@click.option("--name", required=True, help="Shown on the leaderboard.")
@click.option("--organisation", default="", help="Your real organisation.")
@click.option("--hide-organisation", is_flag=True, help="Keep the organisation off the board.")
@click.option("--save/--no-save", default=True, show_default=True,
              help="Keep the token in $MFR_CONFIG_DIR/tokens.json for the other commands.")
@_gateway
@json_option
@reports_errors
def signup(name: str, organisation: str, hide_organisation: bool, save: bool,
           gateway: str | None, as_json: bool) -> None:
    """Sign up; prints your token once (only its hash is stored by the platform)."""
    settings = ClientSettings()
    with client(gateway, need_token=False, settings=settings) as api:
        created = api.signup(name, organisation, hide_organisation)
        where = save_token(settings.config_dir, api.url, created["token"]) if save else None
    if as_json:
        emit(created)
        return
    click.echo(f"participant id: {created['id']}")
    click.echo(f"token:          {created['token']}")
    click.echo("The token is shown only this once" + (f"; saved in {where}." if where else
                                                        ": keep it (MFR_TOKEN)."), err=True)


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--track", required=True, help="Track id, e.g. A.")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="Follow the submission until it is scored, rejected or failed.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to follow at most.")
@gateway_option
@json_option
@reports_errors
def submit(model: Path, track: str, follow: bool, timeout: float, gateway: str | None,
           token: str | None, as_json: bool) -> None:
    """Upload MODEL (a zip holding one model.onnx) to a track, then follow its state.

    A bare .onnx is zipped first, as `zip model.zip model.onnx` would.
    Exit status: 0 when scored (or not followed), 1 when rejected, failed or cancelled.
    """
    import tempfile

    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from cli.client import zip_model

    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="mfr-submit-") as tmp, client(gateway, token) as api:
        if model.suffix.lower() == ".onnx":
            model = zip_model(model, Path(tmp) / "model.zip")
        if as_json:
            created = api.submit(model, track)
        else:
            with Progress("[progress.description]{task.description}", BarColumn(),
                          DownloadColumn(), TransferSpeedColumn(), console=console) as bar:
                task = bar.add_task(f"uploading {model.name}", total=model.stat().st_size)
                created = api.submit(model, track,
                                     progress=lambda sent, _total: bar.update(task, completed=sent))
            console.print(f"submission [bold]{created['id']}[/] queued on track {track}")
        if not follow:
            if as_json:
                emit(created)
            return
        final = api.follow(created["id"], None if as_json else _narrate(console), timeout=timeout)
    if as_json:
        emit(final)
    else:
        _print_result(final)
    sys.exit(0 if final["state"] in TERMINAL_OK else 1)


def _narrate(console):
    def on_change(submission: dict) -> None:
        progress = submission.get("progress") or {}
        detail = ""
        if progress.get("total"):
            detail = f" {progress.get('done', 0)}/{progress['total']} {progress.get('unit', '')}"
            if progress.get("eta_seconds", -1) >= 0:
                detail += f", about {progress['eta_seconds']:.0f}s left"
        console.print(f"  {submission['state']}{detail}")

    return on_change


def _print_result(submission: dict) -> None:
    from rich.table import Table

    console = stdout_console()
    state = submission["state"]
    if state == "scored":
        table = Table(title=f"submission {submission['id']} (track {submission['track']})")
        for column in ("protocol", "TAR %", "FAR", "threshold", "genuine acc.", "impostors acc."):
            table.add_column(column, justify="right" if column != "protocol" else "left")
        for pid, score in submission["scores"].items():
            if score.get("rate", "tar") != "tar":  # accuracy or TPIR: no TAR counts
                table.add_row(f"{pid} ({score['rate']})", pct(score[score["rate"]]), "", "", "", "")
                continue
            threshold = "-inf" if score["threshold"] is None else f"{score['threshold']:.6f}"
            table.add_row(pid, pct(score["tar"]), f"{score['far']:.0e}", threshold,
                          f"{score['genuine_accepted']}/{score['genuine']}",
                          f"{score['impostors_accepted']}/{score['impostor']}")
        console.print(table)
        console.print(f"ranking score: [bold]{pct(submission['ranking_score'])}[/]"
                      + ("  (public)" if submission.get("public") else ""))
        return
    console.print(f"submission {submission['id']}: [bold red]{state}[/]")
    for error in submission.get("errors", []):
        console.print(f"  {_plain(error['code'])}: {_plain(error['message'])}")


@click.command()
@click.argument("submission_id", required=False)
@click.option("--set-public", is_flag=True, help="Make SUBMISSION_ID your public entry (Set Public).")
@gateway_option
@json_option
@reports_errors
def status(submission_id: str | None, set_public: bool, gateway: str | None, token: str | None,
           as_json: bool) -> None:
    """Your submissions (or one of them), their states, scores and errors."""
    from rich.table import Table

    with client(gateway, token) as api:
        if submission_id:
            if set_public:
                api.set_public(submission_id)
            one = api.submission(submission_id)
            if as_json:
                emit(one)
            elif one["state"] in ("scored", "rejected", "failed", "cancelled"):
                _print_result(one)
            else:
                click.echo(f"submission {one['id']}: {one['state']}")
            return
        if set_public:
            raise click.UsageError("--set-public needs a SUBMISSION_ID")
        mine = api.submissions()
    if as_json:
        emit({"submissions": mine})
        return
    table = Table(title="your submissions")
    table.add_column("id", no_wrap=True, min_width=36)
    for column in ("track", "state", "score %", "public", "errors", "submitted"):
        table.add_column(column)
    for s in mine:
        table.add_row(s["id"], s["track"], s["state"], pct(s["ranking_score"]),
                      "yes" if s["public"] else "", " ".join(e["code"] for e in s["errors"]),
                      s["created_at"][:16].replace("T", " "))
    stdout_console().print(table)


def board_table(board: dict, title: str = ""):
    from rich.table import Table

    protocols = board.get("protocols") or [{"id": k, "title": k}
                                           for k in (board["entries"][0]["protocols"]
                                                     if board["entries"] else {})]
    table = Table(title=title or f"track {board['track']}" + (" (final)" if board["frozen"] else ""))
    table.add_column("#", justify="right")
    table.add_column("participant")
    table.add_column("organisation")
    for p in protocols:
        table.add_column(p["title"], justify="right")
    for column in ("score", "size MB", "ms"):
        table.add_column(column, justify="right")
    for e in board["entries"]:
        name = _plain(e["participant"]) + (" \\[baseline]" if e.get("baseline") else "")
        organisation = (_plain(e["organisation"]) if e["organisation"]
                        else "(hidden)" if e.get("organisation_hidden") else "-")
        table.add_row(str(e["rank"]), name, organisation,
                      *(pct(e["protocols"].get(p["id"])) for p in protocols),
                      f"[bold]{pct(e['ranking_score'])}[/]",
                      "" if e["model_size_mb"] is None else f"{e['model_size_mb']:.1f}",
                      "" if e["latency_ms"] is None else f"{e['latency_ms']:.3f}")
    return table


@click.command()
@click.option("--track", default=None, help="Track id (default: every track).")
@_gateway
@json_option
@reports_errors
def leaderboard(track: str | None, gateway: str | None, as_json: bool) -> None:
    """Print a track's leaderboard (TAR in percent with 3 decimals)."""

    with client(gateway, need_token=False) as api:
        tracks = [track] if track else [t["id"] for t in api.challenge()["tracks"]]
        boards = [api.leaderboard(t) for t in tracks]
    if as_json:
        emit(boards[0] if track else {"boards": boards})
        return
    console = stdout_console()
    for board in boards:
        console.print(board_table(board))


@click.command()
@gateway_option
@json_option
@reports_errors
def quota(gateway: str | None, token: str | None, as_json: bool) -> None:
    """How many submissions you have left today, and when the count resets."""
    with client(gateway, token) as api:
        left = api.quota()
    if as_json:
        emit(left)
        return
    click.echo(f"{left['remaining']} of {left['limit']} submissions left today ({left['day']}); "
               f"resets at {left['resets_at']}")
