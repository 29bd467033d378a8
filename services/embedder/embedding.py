"""Embedding in one process: (model, test set, shards) -> per-shard features -> one matrix.

``mfr embed`` calls :func:`embed_testset` and :func:`assemble`; the embedder
workers embed shard by shard in a model's process and assemble with the same
:func:`assemble`. Both run every batch at exactly the challenge's batch size
(the last one padded), so they give the same bits. Finished shards are kept in
:mod:`parts` as they complete, so a killed run restarted with the same parts
resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mfr.errors import InvalidInput
from mfr.logs import get_logger
from mfr.testset.format import TestSet, TestSetCorrupt
from services.embedder.parts import FeatureParts
from services.embedder.pipeline import Pipeline, non_finite_rows
from services.embedder.runtime import Runner

log = get_logger("mfr.embedder")

@dataclass
class Progress:
    """Where a job stands; handed to the progress callback after every batch."""

    images_done: int
    images_total: int
    shards_done: int
    shards_total: int
    non_finite_rows: int
    rate: float  # images per second in this call
    stage: str

    @property
    def eta_seconds(self) -> float:
        left = self.images_total - self.images_done
        return left / self.rate if self.rate > 0 else -1.0


@dataclass
class EmbedSummary:
    shards_embedded: list[int] = field(default_factory=list)
    shards_skipped: list[int] = field(default_factory=list)
    images_embedded: int = 0
    non_finite_rows: int = 0  # among the shards embedded by this call
    feature_dim: int = 0
    seconds: float = 0.0
    batch_size: int = 0

    @property
    def images_per_s(self) -> float:
        return self.images_embedded / self.seconds if self.seconds > 0 else 0.0


def model_sha256(model: bytes) -> str:
    return hashlib.sha256(model).hexdigest()


def job_identity(testset: TestSet, model_hash: str, mean: float, std: float) -> dict:
    """What the parts were computed from; parts under another identity are stale."""
    return {"testset_id": testset.id, "model_sha256": model_hash, "input_mean": float(mean),
            "input_std": float(std)}


def embed_testset(runner: Runner, model_hash: str, testset: TestSet, parts: FeatureParts,
                  mean: float, std: float, batch_size: int,
                  shards: Sequence[int] | None = None,
                  progress: Callable[[Progress], None] | None = None) -> EmbedSummary:
    """Embed the requested shards (default: all) that ``parts`` does not hold yet."""
    requested = list(range(len(testset.shards))) if not shards else sorted(set(shards))
    bad = [s for s in requested if not 0 <= s < len(testset.shards)]
    if bad:
        raise InvalidInput(f"shard {bad[0]} does not exist (the test set has "
                           f"{len(testset.shards)} shards)", code="shard_invalid")
    identity = job_identity(testset, model_hash, mean, std)
    existing = parts.read_job()
    if existing is not None and existing != identity:
        log.warning("discarding stale parts", was=existing, now=identity)
        parts.clear()
        existing = None
    if existing is None:
        parts.write_job(identity)
    finished = parts.finished()
    todo = [s for s in requested if s not in finished]
    summary = EmbedSummary(shards_skipped=[s for s in requested if s in finished])
    total_images = sum(testset.shards[s].images for s in requested)
    state = Progress(sum(testset.shards[s].images for s in summary.shards_skipped), total_images,
                     len(summary.shards_skipped), len(requested), 0, 0.0, "embedding")
    if summary.shards_skipped:
        log.info("resuming", skipped=len(summary.shards_skipped), left=len(todo))
    if not todo:
        state.stage = "embedded"
        if progress:
            progress(state)
        return summary
    summary.batch_size = batch_size
    started = time.perf_counter()

    def on_batch(rows: int) -> None:
        summary.images_embedded += rows
        state.images_done += rows
        state.rate = summary.images_embedded / max(time.perf_counter() - started, 1e-9)
        if progress:
            progress(state)

    def on_shard(index: int, features: np.ndarray) -> None:
        parts.put(index, features)
        bad_rows = non_finite_rows(features)
        summary.shards_embedded.append(index)
        summary.non_finite_rows += bad_rows
        summary.feature_dim = features.shape[1]
        state.shards_done += 1
        state.non_finite_rows += bad_rows

    pipeline = Pipeline(runner.run, testset, mean, std, batch_size, pad_batches=True)
    if progress:
        progress(state)  # where a resumed job starts
    pipeline.embed(todo, on_shard, on_batch)
    summary.seconds = time.perf_counter() - started
    state.stage = "embedded"
    if progress:
        progress(state)
    return summary


def assemble(testset: TestSet, parts: FeatureParts, out: str | Path) -> tuple[int, int]:
    """Write every shard's features as one float32 [N, D] ``.npy``; return (D, non-finite rows).

    Every row gets a feature: a missing or misshapen part is an error, never a
    dropped row; non-finite rows are counted, and kept as they are.
    """
    missing = sorted(set(range(len(testset.shards))) - parts.finished())
    if missing:
        raise InvalidInput(f"cannot assemble: {len(missing)} shard(s) not embedded yet "
                           f"(first: {missing[0]})", code="shards_missing")
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    matrix = None
    bad_rows = 0
    try:
        for shard in testset.shards:
            features = parts.get(shard.index)
            if (features.ndim != 2 or len(features) != shard.images
                    or (matrix is not None and features.shape[1] != matrix.shape[1])):
                raise TestSetCorrupt(f"features of shard {shard.index} have shape "
                                     f"{features.shape}, expected ({shard.images}, D)")
            if matrix is None:
                matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                                   shape=(testset.images, features.shape[1]))
            matrix[shard.start:shard.stop] = features
            bad_rows += non_finite_rows(features)
        matrix.flush()
        dim = int(matrix.shape[1])
        del matrix
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dim, bad_rows
