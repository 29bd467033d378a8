"""``mfr score``: exact rates of a feature matrix, offline (DESIGN.md sections 3.1, 7).

    mfr score --challenge C.toml --manifest M.csv --features F.npy [--json] [--roc]

``--json`` prints the contract document and nothing else on stdout;
``--roc`` adds a top-level ``"roc"`` key (TAR at FAR 1e-1 ... target, each
marked exact or estimated). Protocol files (``pairs``, ``templates``) are read
relative to the manifest's folder. Without ``--json`` a table is printed. A progress
bar goes to stderr when stderr is a terminal. Expected failures print
``error[code]: message`` on stderr and exit 2.
"""

from __future__ import annotations

import json
import sys
import time

import click

from cli.errors import reports_errors
from mfr.errors import InvalidInput


def _load_features(path: str):
    import numpy as np

    try:
        # mmap: the matrix is read once by normalisation, never copied whole.
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as exc:
        raise InvalidInput(f"cannot read features {path}: {exc.strerror or exc}",
                           code="features_invalid") from None
    except ValueError as exc:
        raise InvalidInput(f"features {path} is not a .npy array: {exc}",
                           code="features_invalid") from None


@click.command("score")
@click.option("--challenge", "challenge_path", type=click.Path(dir_okay=False), default=None,
              help="Challenge TOML (default: the built-in ICCV21-MFR challenge).")
@click.option("--manifest", "manifest_path", required=True, type=click.Path(dir_okay=False),
              help="Test-set manifest CSV (path,identity,tags), row = image index.")
@click.option("--features", "features_path", required=True, type=click.Path(dir_okay=False),
              help="float32 [N, D] .npy, row i = manifest row i.")
@click.option("--protocol", "protocols", multiple=True,
              help="Score only this protocol (repeatable; default: all).")
@click.option("--backend", envvar="MFR_SCORER_BACKEND", default="auto", show_default=True,
              help="Compute backend: auto, cpu or gpu (also MFR_SCORER_BACKEND).")
@click.option("--precision", envvar="MFR_SCORER_PRECISION", default="auto", show_default=True,
              help="CPU candidate search: auto (int8 when exact), int8 or fp32 "
                   "(also MFR_SCORER_PRECISION). No reported number depends on it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--roc", is_flag=True, help="Also report TAR at FAR 1e-1, 1e-2, ... the target.")
@click.option("--timings", is_flag=True,
              help="Also print where the time went (one JSON line on stderr: reading the "
                   "inputs, normalisation, plan, tiles, listed kinds; backend, precision).")
@reports_errors
def score(challenge_path, manifest_path, features_path, protocols, backend, precision, as_json,
          roc, timings):
    """Score features offline: the exact rate of every protocol."""
    from pathlib import Path

    from mfr.challenge import load_challenge
    from mfr.manifest import read_manifest
    from services.scorer.engine import ImageLabels, read_protocol_files, select_backend
    from services.scorer.engine import score as run_score
    from services.scorer.engine.universes import select_protocols

    started = time.perf_counter()
    challenge = load_challenge(challenge_path)
    chosen = select_protocols(challenge, list(protocols))
    manifest = read_manifest(manifest_path)
    features = _load_features(features_path)
    wanted_tags = {t for p in chosen for t in (p.tag, p.probe, p.gallery) if t}
    labels = ImageLabels.from_manifest(manifest, wanted_tags)
    image_index = {path: row for row, path in enumerate(manifest.paths)}
    files = read_protocol_files(chosen, Path(manifest_path).parent, image_index)
    read_s = time.perf_counter() - started
    engine = select_backend(backend, precision=precision)
    backend_s = time.perf_counter() - started - read_s
    with _progress_bar() as progress:
        report = run_score(features, labels, challenge, protocols=[p.id for p in chosen],
                           files=files, backend=engine, progress=progress)
    if timings:  # stderr: stdout stays the same document whatever the machine and the run
        seconds = {"inputs": read_s, "backend": backend_s, **report.seconds}
        click.echo(json.dumps({"backend": engine.name, "precision": engine.precision,
                               "seconds": {k: round(v, 3) for k, v in seconds.items()}}),
                   err=True)
    if as_json:
        click.echo(json.dumps(report.to_json(roc=roc)))
    else:
        _print_table(report, roc, f"{engine.precision}: {engine.precision_reason}")


class _progress_bar:
    """A rich progress bar on stderr when it is a terminal, else nothing."""

    def __enter__(self):
        if not sys.stderr.isatty():
            return None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("scoring, round {task.fields[round]}"), BarColumn(),
                             TextColumn("{task.percentage:>5.1f}%"), TimeRemainingColumn(),
                             console=Console(stderr=True), transient=True)
        self._bar.start()
        self._task = self._bar.add_task("score", total=None, round=1)
        return self._advance

    def _advance(self, done: int, total: int, round_number: int) -> None:
        self._bar.update(self._task, completed=done, total=total, round=round_number)

    def __exit__(self, *exc_info) -> None:
        if hasattr(self, "_bar"):
            self._bar.stop()


def _percent(value) -> str:
    return f"{100 * float(value):.3f}"


def _threshold(value: float) -> str:
    return "-inf" if value == float("-inf") else f"{value:.6f}"


def _print_table(report, roc: bool, precision: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from services.scorer.engine import ProtocolResult, rate_of

    table = Table(title=f"{report.challenge.title} (backend {report.backend}, {precision})")
    for header in ("protocol", "TAR %", "FAR", "threshold", "genuine", "accepted", "impostors",
                   "accepted"):
        table.add_column(header, justify="left" if header == "protocol" else "right")
    others = {pid: r for pid, r in report.results.items() if not isinstance(r, ProtocolResult)}
    for pid, result in report.results.items():
        if pid in others:
            continue
        table.add_row(pid, _percent(result.tar), result.protocol.far_text,
                      _threshold(result.threshold), f"{result.genuine:,}",
                      f"{result.genuine_accepted:,}", f"{result.impostor:,}",
                      f"{result.impostors_accepted:,}")
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # a pipe or file gets whole rows, not 80 columns
    console.print(table)
    if others:
        rates = Table(title="Other protocols (fields as in --json)")
        for header in ("protocol", "rate", "%", "details"):
            rates.add_column(header, justify="left" if header in ("protocol", "details")
                             else "right")
        for pid, result in others.items():
            details = {k: v for k, v in result.to_json().items()
                       if not isinstance(v, list) and k != result.protocol.rate}
            rates.add_row(pid, result.protocol.rate, _percent(rate_of(result)),
                          ", ".join(f"{k} {v}" for k, v in details.items()))
        console.print(rates)
    ranking = report.ranking_score
    if ranking is not None:
        console.print(f"ranking score: {_percent(ranking)} %")
    if roc:
        curve = Table(title="ROC points (estimated: from the impostor sample)")
        for header in ("protocol", "FAR", "TAR %", "threshold", "exact"):
            curve.add_column(header, justify="left" if header == "protocol" else "right")
        for pid, result in report.results.items():
            for point in getattr(result, "roc", ()):
                curve.add_row(pid, f"{float(point.far):g}", _percent(point.tar),
                              _threshold(point.threshold), "yes" if point.exact else "estimated")
        console.print(curve)
