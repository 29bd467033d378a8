"""``mfr demo``: a scaled-down challenge end to end on this machine (DESIGN.md section 8).

What it does, in order: a synthetic test set of the built-in challenge (about
1/100 of the real image counts by default; built once per machine, cached),
the baseline models (``mfr baselines``), a copy of the built-in challenge
whose submission window is moved to include now (the original closed in
2021: the demo says so), the whole stack (``mfr up``'s supervisor, in
``STATE_DIR/demo``, started afresh each time), organisers publishing two
baselines, three participants signing up (one hides their organisation) and
submitting through the HTTP API — a good model, a mask-unaware one, a weak
one, a model the validator rejects (float16 weights) and a zip the gateway
refuses at once — one participant choosing which of their submissions is
public, progress while everything is evaluated, and finally the leaderboard
and its URL. ``--once`` stops after printing; ``--json`` prints the final
leaderboards as one JSON document on stdout.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from cli.errors import reports_errors
from mfr.records.states import TERMINAL
from mfr.settings import GATEWAY_PORT

DEMO_SCALE = 0.01


def demo_challenge(path: Path, now: datetime) -> Path:
    """The built-in challenge with its window moved to [now - 1 day, now + 30 days)."""
    from importlib import resources

    text = resources.files("mfr.builtin").joinpath("iccv21-mfr.toml").read_text("utf-8")
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    text = re.sub(r"(?m)^opens = .*$", f"opens = {(now - timedelta(days=1)).strftime(stamp)}", text)
    text = re.sub(r"(?m)^closes = .*$", f"closes = {(now + timedelta(days=30)).strftime(stamp)}",
                  text)
    text = ("# mfr demo: the built-in challenge with its submission window moved to include\n"
            "# today (the original closed on 2021-10-02).\n" + text)
    path.write_text(text, "utf-8")
    return path


def build_models(folder: Path, say) -> dict[str, Path]:
    """Baseline models as zips (built once per state dir) plus one the validator rejects."""
    from cli.client import zip_model
    from mfr.baselines.build import build_baselines

    index_path = folder / "baselines.json"
    if not index_path.exists():
        build_baselines(folder, say=say)
    index = json.loads(index_path.read_text())["models"]
    zips = {}
    for entry in index:
        zips[entry["name"]] = zip_model(folder / entry["file"], folder / f"{entry['name']}.model.zip")
    from mfr.onnxzoo.hostile import fp16_weights

    zips["float16"] = zip_model(fp16_weights(), folder / "float16.model.zip")
    bad = folder / "two-models.zip"
    import zipfile

    with zipfile.ZipFile(bad, "w") as archive:
        for name in ("model.onnx", "model_v2.onnx"):
            info = zipfile.ZipInfo(name, date_time=(2021, 6, 1, 0, 0, 0))
            info.external_attr = 0o100644 << 16
            archive.writestr(info, b"not really onnx")
    zips["two-models"] = bad
    return zips


# (participant, organisation, hide organisation, [(model, track)], model to make public)
PARTICIPANTS = [
    ("Ada", "Analytical Engines Ltd", False,
     [("synth-lda-400", "A"), ("synth-lda-1500-nomask", "A")], "synth-lda-400"),
    ("Grace", "Compiler Research Lab", True, [("synth-lda-100", "A"), ("synth-lda-400", "B")], None),
    ("Alan", "Bletchley Park", False, [("float16", "A"), ("two-models", "A")], None),
]
BASELINES = [("synth-lda-1500", "Baseline LDA-1500"), ("synth-random", "Baseline random")]


class Demo:
    def __init__(self, gateway_url: str, admin_token: str, models: dict[str, Path], console) -> None:
        from cli.client import GatewayClient

        self.url = gateway_url
        self.admin = GatewayClient(gateway_url, admin_token)
        self.models = models
        self.console = console
        self.tracked: list[dict] = []  # {who, model, track, id, token}

    def say(self, line: str) -> None:
        self.console.print(line)

    def _submit(self, who: str, token: str, model: str, track: str) -> None:
        from cli.client import GatewayClient, GatewayError

        if model not in self.models:
            return
        with GatewayClient(self.url, token) as api:
            try:
                created = api.submit(self.models[model], track)
            except GatewayError as exc:
                self.say(f"  {who}: {model} on track {track} refused at once: "
                         f"HTTP {exc.status} [bold]{exc.code}[/] — {exc.message}")
                return
        self.say(f"  {who}: {model} on track {track} -> submission {created['id'][:8]} queued")
        self.tracked.append({"who": who, "model": model, "track": track, "id": created["id"],
                             "token": token})

    def publish_baselines(self) -> None:
        self.say("[bold]organisers publish baselines[/] (exempt from the daily limit)")
        for model, name in BASELINES:
            created = self.admin.admin("POST", "/participants", json={
                "name": name, "organisation": "MFR organisers"}).json()
            self._submit(name, created["token"], model, "A")

    def sign_up_and_submit(self) -> None:
        from cli.client import GatewayClient

        for name, organisation, hidden, submissions, _ in PARTICIPANTS:
            with GatewayClient(self.url) as api:
                created = api.signup(name, organisation, hidden)
            note = " (organisation hidden)" if hidden else ""
            self.say(f"[bold]{name}[/] signs up{note}")
            for model, track in submissions:
                self._submit(name, created["token"], model, track)

    def follow(self, timeout: float) -> None:
        """Show every submission's state and progress until all are final."""
        from rich.live import Live
        from rich.table import Table

        from cli.client import GatewayClient

        deadline = time.monotonic() + timeout
        clients = {t["id"]: GatewayClient(self.url, t["token"]) for t in self.tracked}

        def table() -> tuple[Table, bool]:
            view = Table(title="evaluation", expand=False, min_width=90)
            for column in ("participant", "model", "track", "state", "progress", "score %"):
                view.add_column(column)
            done = True
            for t in self.tracked:
                s = clients[t["id"]].submission(t["id"])
                t["state"] = s["state"]
                done &= s["state"] in TERMINAL
                p = s.get("progress") or {}
                progress = (f"{p.get('done', 0)}/{p.get('total', 0)} {p.get('unit', '')}"
                            if p.get("total") else "")
                if s["state"] in ("rejected", "failed"):
                    progress = " ".join(e["code"] for e in s["errors"])
                t["errors"] = s["errors"]
                score = "" if s["ranking_score"] is None else f"{100 * s['ranking_score']:.3f}"
                view.add_row(t["who"], t["model"], t["track"], s["state"], progress, score)
            return view, done

        try:
            with Live(table()[0], console=self.console, refresh_per_second=2) as live:
                while time.monotonic() < deadline:
                    view, done = table()
                    live.update(view)
                    if done:
                        return
                    time.sleep(1.0)
            raise TimeoutError(f"evaluation not finished after {timeout:.0f}s")
        finally:
            for api in clients.values():
                api.close()

    def choose_public(self) -> None:
        from cli.client import GatewayClient

        for name, _, _, _, public_model in PARTICIPANTS:
            if not public_model:
                continue
            for t in self.tracked:
                if t["who"] == name and t["model"] == public_model and t.get("state") == "scored":
                    with GatewayClient(self.url, t["token"]) as api:
                        api.set_public(t["id"])
                    self.say(f"{name} makes {public_model} their public entry (Set Public)")

    def failures(self) -> list[str]:
        """Submissions that should have scored but did not, with the reason."""
        return [f"{t['who']}/{t['model']}: {t.get('state')} "
                + "; ".join(f"{e['code']}: {e['message']}" for e in t.get("errors", []))
                for t in self.tracked
                if t["model"] != "float16" and t.get("state") != "scored"]

    def leaderboards(self) -> dict:
        tracks = [t["id"] for t in self.admin.challenge()["tracks"]]
        return {track: self.admin.leaderboard(track) for track in tracks}


@click.command()
@click.option("--once", is_flag=True, help="Stop the stack after printing the leaderboard.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the final leaderboards as one JSON document on stdout.")
@click.option("--gateway-port", default=GATEWAY_PORT, show_default=True, type=int)
@click.option("--state-dir", default=Path(".mfr"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The demo runs in STATE_DIR/demo, removed and made afresh each time.")
@click.option("--scale", default=DEMO_SCALE, show_default=True, type=float,
              help="Size of the synthetic test set relative to the real one.")
@click.option("--timeout", default=900.0, show_default=True, help="Seconds to wait for scores.")
@reports_errors
def demo(once: bool, as_json: bool, gateway_port: int, state_dir: Path, scale: float,
         timeout: float) -> None:
    """Run a scaled-down challenge end to end and print the leaderboard."""
    from rich.console import Console

    from cli.participant import board_table, stdout_console
    from cli.settings import StackSettings
    from cli.stack.statedir import StateDirLock
    from cli.stack.supervisor import Stack, StackConfig
    from cli.stack.testsets import default_testset
    from mfr.logs import configure_logging

    configure_logging("console", "WARNING")  # library logs to stderr; stdout is the result
    console = Console(stderr=True)
    started = time.monotonic()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    root = (state_dir / "demo").resolve()
    StateDirLock(root).ensure_free()  # not the files of a demo still running
    shutil.rmtree(root, ignore_errors=True)
    (root / "models").mkdir(parents=True)

    def step(what: str):
        console.print(f"[dim]{time.monotonic() - started:6.1f}s[/] {what}")

    settings = StackSettings()
    step(f"synthetic test set at scale {scale:g} (cached per machine)")
    testset = default_testset(scale, cache=settings.cache_dir)
    step("baseline models (mfr baselines)")
    models = build_models(state_dir.resolve() / "demo-models", lambda line: console.print(f"  {line}"))
    challenge = demo_challenge(root / "challenge.toml", datetime.now(UTC))
    step(f"challenge: the built-in ICCV21-MFR challenge with its window moved to include today "
         f"({challenge})")
    stack = Stack(StackConfig(state_dir=root, gateway_port=gateway_port, challenge=challenge,
                              testset=testset, extra_env={"MFR_DISPATCH_WORKERS": "2"},
                              settings=settings),
                  say=lambda line: console.print(f"  {line}"))
    code = 0
    try:
        step("starting the stack")
        addresses = stack.start()
        url = addresses["gateway"]
        player = Demo(url, stack.env["MFR_ADMIN_TOKEN"], models, console)
        step("submissions through the HTTP API")
        player.publish_baselines()
        player.sign_up_and_submit()
        step("evaluating (validation, embedding, scoring)")
        player.follow(timeout)
        failures = player.failures()
        for line in failures:
            console.print(f"[red]not scored:[/] {line}")
        if failures:
            code = 1
            console.print(f"see the services' logs in {root / 'logs'}")
        player.choose_public()
        boards = player.leaderboards()
        step(f"done in {time.monotonic() - started:.0f}s")
        if as_json:
            click.echo(json.dumps({"url": url, "leaderboards": boards}, indent=1))
        else:
            out = stdout_console()
            for board in boards.values():
                if board["entries"]:
                    out.print(board_table(board))
            out.print(f"Leaderboard: [bold]{url}/[/]   (API: {url}/docs)")
        sys.stdout.flush()
        if not once:
            console.print("Serving until Ctrl-C.")
            code = stack.wait(stop.is_set) or code
    except Exception as exc:  # noqa: BLE001 - say what went wrong, then stop what was started
        console.print(f"[red]demo failed:[/] {exc}")
        console.print(f"logs: {root / 'logs'}")
        code = 1
    finally:
        stack.stop()
    sys.exit(code)
