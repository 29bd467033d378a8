"""``mfr embed --model MODEL --testset TESTSET --out F.npy``: a feature matrix, offline.

    mfr embed --model M.onnx --testset DIR --out F.npy [--challenge C.toml]
              [--batch-size N] [--runtime R] [--threads N] [--mean M --std S]
              [--shards 0,3,7] [--parts DIR] [--keep-parts] [--json]

The runtime and the batch size are the challenge's (``[embedding]``; the
built-in challenge: onnxruntime on the CPU, batches of 32), so the features are
bit for bit those the platform's embedder workers compute.

Input normalisation defaults to what the validator reports for the model
(from node names, like the reference checker); ``--mean/--std`` override it.
Finished shards are kept in ``--parts`` (default ``F.npy.parts/``): run the
same command again after a kill and it continues from them. With
``--shards`` only those shards are embedded (no matrix is assembled): several
processes can share one test set and a last plain run assembles.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from cli.errors import reports_errors
from mfr.challenge import RUNTIMES
from mfr.errors import InvalidInput


def _shard_list(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise InvalidInput(f"--shards takes indices like 0,3,7, got {text!r}",
                           code="usage") from None


def detect_normalisation(model: bytes) -> tuple[float, float]:
    """(mean, std) as the validator reports it for this model."""
    import onnx

    from mfr.modelcheck.rules import detect_normalisation as by_names

    (mean, std), _warning = by_names(onnx.load_model_from_string(model).graph)
    return float(mean), float(std)


class _Ticker:
    """A one-line progress display on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, state) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.2 and state.stage == "embedding"):
            return
        self.last = now
        eta = f", {state.eta_seconds:.0f}s left" if state.eta_seconds >= 0 else ""
        print(f"\r{state.images_done}/{state.images_total} images, shards "
              f"{state.shards_done}/{state.shards_total}, {state.rate:.1f} images/s{eta}   ",
              end="" if state.stage == "embedding" else "\n", file=sys.stderr, flush=True)


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The model (.onnx).")
@click.option("--testset", "testset_path", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Test-set folder.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Feature matrix to write (.npy, float32 [N, D]).")
@click.option("--challenge", "challenge_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Challenge TOML whose [embedding] to follow (default: built-in).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per inference call (default: the challenge's).")
@click.option("--runtime", type=click.Choice(RUNTIMES), default=None,
              help="The runtime (default: the challenge's).")
@click.option("--threads", type=int, default=None,
              help="CPU intra-op threads (default: the physical cores available).")
@click.option("--mean", type=float, default=None, help="Pixel mean (default: as validated).")
@click.option("--std", type=float, default=None, help="Pixel std (default: as validated).")
@click.option("--shards", "shards_text", default=None,
              help="Embed only these shards (comma-separated); no matrix is written.")
@click.option("--parts", "parts_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Folder for finished shards (default: OUT.parts).")
@click.option("--keep-parts", is_flag=True, help="Keep the parts folder after assembling.")
@click.option("--json", "as_json", is_flag=True, help="Print a summary as one JSON document.")
@reports_errors
def embed(model_path: Path, testset_path: Path, out: Path, challenge_path: Path | None,
          batch_size: int | None, runtime: str | None, threads: int | None,
          mean: float | None, std: float | None, shards_text: str | None,
          parts_dir: Path | None, keep_parts: bool, as_json: bool) -> None:
    """Embed a test set with a model into a feature matrix."""
    from mfr.challenge import load_challenge
    from mfr.logs import configure_logging
    from mfr.testset.format import TestSet
    from services.embedder.embedding import assemble, embed_testset, model_sha256
    from services.embedder.parts import LocalParts
    from services.embedder.runtime import load_model_bytes, open_runtime

    configure_logging("console", "WARNING")
    if (mean is None) != (std is None):
        raise InvalidInput("give both --mean and --std, or neither", code="usage")
    if std is not None and std == 0:
        raise InvalidInput("--std must not be 0", code="usage")
    embedding = load_challenge(challenge_path).embedding
    batch_size = batch_size or embedding.batch_size
    shards = _shard_list(shards_text)
    testset = TestSet(testset_path)
    model = load_model_bytes(model_path)
    if mean is None:
        mean, std = detect_normalisation(model)
    runner = open_runtime(model, runtime or embedding.runtime, threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = LocalParts(parts_dir or out.with_name(out.name + ".parts"))
    started = time.perf_counter()
    summary = embed_testset(runner, model_sha256(model), testset, parts, mean, std, batch_size,
                            shards=shards, progress=_Ticker())
    result = {
        "testset_id": testset.id,
        "model_sha256": model_sha256(model),
        "input_mean": mean,
        "input_std": std,
        "runtime": runner.info.as_dict(),
        "batch_size": batch_size,
        "shards_embedded": len(summary.shards_embedded),
        "shards_skipped": len(summary.shards_skipped),
        "images_embedded": summary.images_embedded,
        "images_per_s": round(summary.images_per_s, 2),
    }
    if shards is None:
        dim, bad_rows = assemble(testset, parts, out)
        if not keep_parts:
            parts.clear()
        result.update(features=str(out), rows=testset.images, feature_dim=dim,
                      non_finite_rows=bad_rows)
    else:
        result.update(features=None, non_finite_rows_in_shards=summary.non_finite_rows)
    result["seconds"] = round(time.perf_counter() - started, 3)
    if as_json:
        print(json.dumps(result))
        return
    if shards is None:
        click.echo(f"wrote {out}: {testset.images} x {result['feature_dim']} float32 "
                   f"({result['shards_embedded']} shards embedded, "
                   f"{result['shards_skipped']} resumed; {summary.images_per_s:.1f} images/s, "
                   f"{runner.info.name} on {runner.info.device}, batch {batch_size})")
        if bad_rows:
            click.echo(f"warning: {bad_rows} row(s) have a NaN, Inf or zero feature; they are "
                       "kept and can never be accepted", err=True)
    else:
        click.echo(f"embedded shards {shards}: {summary.images_embedded} images into {parts.root}")
