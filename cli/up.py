"""``mfr up``: the whole platform on this machine until Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click

from cli.errors import reports_errors
from mfr.settings import GATEWAY_PORT


@click.command()
@click.option("--challenge", callback=lambda _c, _p, value: _challenge(value),
              help="Challenge TOML, or a built-in challenge: iccv21-mfr (the default) or "
                   "mfr-ongoing (served on a synthetic test set with its protocol files).")
@click.option("--testset", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Test set directory (default: a synthetic one).")
@click.option("--gateway-port", default=GATEWAY_PORT, show_default=True, type=int)
@click.option("--state-dir", default=Path(".mfr"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--scorers", default=1, show_default=True, type=click.IntRange(0, 64),
              help="Scorer worker processes.")
@click.option("--embedders", default=1, show_default=True, type=click.IntRange(0, 64),
              help="Embedder worker processes (they share one submission's shards).")
@reports_errors
def up(challenge: Path | None, testset: Path | None, gateway_port: int, state_dir: Path,
       scorers: int, embedders: int) -> None:
    """Start PostgreSQL, S3, the services, their workers and the gateway; stop all on Ctrl-C.

    MFR_DATABASE_URL and MFR_S3_ENDPOINT (+ MFR_S3_ACCESS_KEY, MFR_S3_SECRET_KEY)
    use external servers (any PostgreSQL, any S3) instead of the embedded ones;
    `mfr config up` lists every variable it reads.
    """
    from cli.settings import UpSettings
    from cli.stack.statedir import StateDirInUse
    from cli.stack.supervisor import Stack, StackConfig

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    def say(line: str) -> None:
        click.echo(line, err=True)

    config = StackConfig.from_settings(UpSettings(), state_dir, gateway_port=gateway_port,
                                       scorers=scorers, embedders=embedders,
                                       challenge=challenge, testset=testset)
    stack = Stack(config, say=say)
    code = 0
    try:
        say(f"starting the MFR platform (state in {state_dir})")
        addresses = stack.start()
        click.echo("MFR platform is up:")
        for name, address in addresses.items():
            click.echo(f"  {name:<12} {address}")
        _window_note(challenge, say)
        click.echo("Press Ctrl-C to stop.", err=True)
        sys.stdout.flush()
        code = stack.wait(stop.is_set)
    except StateDirInUse:  # error[state_dir_in_use]: ..., exit 2 (reports_errors)
        raise
    except Exception as exc:  # noqa: BLE001 - report, then stop what was started
        say(f"error: {exc}")
        code = 1
    finally:
        stack.stop()
    sys.exit(code)


def _challenge(value: str | None) -> Path | str | None:
    from mfr.challenge import BUILTIN_CHALLENGES, is_builtin

    if value is None or is_builtin(value):
        return value
    if not Path(value).is_file():
        raise click.BadParameter(f"{value!r} is neither a file nor a built-in challenge "
                                 f"({', '.join(BUILTIN_CHALLENGES)})")
    return Path(value)


def _window_note(path: Path | None, say) -> None:
    """Say when the served challenge takes no submissions now (the built-in one closed in 2021)."""
    from datetime import UTC, datetime

    from mfr.challenge import load_challenge

    challenge = load_challenge(path)
    now = datetime.now(UTC)
    if challenge.closes and now >= challenge.closes:
        say(f"note: {challenge.id} closed at {challenge.closes.isoformat()}; its leaderboard is "
            "frozen and uploads are refused (403). Serve a challenge whose window is open with "
            "--challenge C.toml, or try `mfr demo`.")
    elif challenge.opens and now < challenge.opens:
        say(f"note: {challenge.id} opens at {challenge.opens.isoformat()}; uploads are refused "
            "until then.")
