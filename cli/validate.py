"""``mfr validate MODEL --track ID [--challenge C.toml] [--json]`` (DESIGN.md section 7).

Exit 0 when the model is accepted, 1 when rejected; a usage error (unreadable
model, unknown track, bad challenge file) prints ``error[code]: message`` and
exits 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from cli.errors import reports_errors
from mfr.errors import InvalidInput


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--track", "track_id", required=True, help="Track id, e.g. A or B.")
@click.option("--challenge", "challenge_path", type=click.Path(path_type=Path), default=None,
              help="Challenge TOML (default: the built-in ICCV21-MFR challenge).")
@click.option("--latency-factor", type=float, default=None,
              help="Pin the hardware factor instead of measuring it (also MFR_LATENCY_FACTOR).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@reports_errors
def validate(model: Path, track_id: str, challenge_path: Path | None,
             latency_factor: float | None, as_json: bool) -> None:
    """Check MODEL (a model.zip or a .onnx) against a track's rules, as the challenge's
    checker does, plus the platform's safety rules."""
    from mfr.challenge import load_challenge
    from services.validator.config import ModelCheckSettings
    from services.validator.validator import Validator

    if not model.is_file() or not os.access(model, os.R_OK):
        raise InvalidInput(f"cannot read {model}: not a readable file", code="model_unreadable")
    challenge = load_challenge(challenge_path)
    track = challenge.track(track_id)
    settings = ModelCheckSettings()
    if latency_factor is not None and latency_factor <= 0:
        raise InvalidInput(f"--latency-factor must be positive, got {latency_factor}",
                           code="invalid_latency_factor")
    validator = Validator.create(
        settings.cache_dir,
        latency_factor=latency_factor or settings.latency_factor,
        options=settings.options(),
    )
    validator.calibrator.on_measure = lambda text: click.echo(f"{text} ...", err=True)
    report = validator.validate(model, track, batch_sizes=challenge.embedding.batch_sizes)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_report(report, model, challenge.id)
    sys.exit(0 if report.ok else 1)


def _print_report(report, model: Path, challenge_id: str) -> None:
    verdict = "accepted" if report.ok else "rejected"
    click.echo(f"{verdict}: {model} on track {report.track} of {challenge_id}")
    for finding in report.errors:
        click.echo(f"  error[{finding.code}]: {finding.message}")
    for finding in report.warnings:
        click.echo(f"  warning[{finding.code}]: {finding.message}")
    latency = f"{report.latency_ms:.3f} ms" if report.latency_ms else "not measured"
    click.echo(
        f"  feature dim {report.feature_dim or '-'}, model {report.model_size_mb:.3f} MB, "
        f"input mean {report.input_mean:g} std {report.input_std:g}"
    )
    click.echo(
        f"  latency {latency}, limit {report.latency_limit_ms:.3f} ms "
        f"(V100 limit x {report.latency_factor:.3f} on {report.device})"
    )
