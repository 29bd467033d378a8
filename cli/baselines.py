"""``mfr baselines --out DIR``: ONNX baselines of known quality for the synthetic test sets.

    mfr baselines --out DIR [--iresnet 18,50,100] [--zip] [--json]

Writes ``DIR/<name>.onnx`` (and ``<name>.zip`` holding ``model.onnx`` with
``--zip``) plus ``DIR/baselines.json``. ``--iresnet`` adds random-weight
IResNet-shaped models for benchmarks (IResNet-100 is about 250 MB).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cli.errors import reports_errors
from mfr.errors import InvalidInput


def _depths(text: str) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        depths = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InvalidInput(f"--iresnet takes depths like 18,50,100, got {text!r}",
                           code="usage") from None
    from mfr.onnxzoo import IRESNET_STAGES

    unknown = [d for d in depths if d not in IRESNET_STAGES]
    if unknown:
        raise InvalidInput(f"no IResNet-{unknown[0]}; known: {sorted(IRESNET_STAGES)}",
                           code="usage")
    return depths


@click.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the models and baselines.json.")
@click.option("--iresnet", "iresnet", default="", metavar="DEPTHS",
              help="Also write random-weight IResNets of these depths, e.g. 18,50,100.")
@click.option("--zip", "zipped", is_flag=True, help="Also write <name>.zip with model.onnx inside.")
@click.option("--json", "as_json", is_flag=True, help="Print the index as one JSON document.")
@reports_errors
def baselines(out: Path, iresnet: str, zipped: bool, as_json: bool) -> None:
    """Build baseline ONNX models of known quality (and random-weight IResNets)."""
    from mfr.baselines.build import build_baselines

    depths = _depths(iresnet)
    say = (lambda line: print(line, file=sys.stderr)) if as_json else click.echo
    index = build_baselines(out, iresnet=depths, zipped=zipped, say=say)
    if as_json:
        print(json.dumps({"out": str(out), "models": index}))
    else:
        click.echo(f"wrote {len(index)} models and baselines.json to {out}")
