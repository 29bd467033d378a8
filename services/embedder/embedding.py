"""An embedding job: (model, test set, shards) -> per-shard features -> one feature matrix.

The core of the embedder, free of gRPC: ``mfr embed`` and the EmbedderService
both call :func:`embed_testset` and :func:`assemble`. Finished shards are
kept in :mod:`parts` as they complete, so a killed job restarted with the
same parts resumes where it stopped, and several pods given disjoint shard
lists share one job.
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
from mfr.testset.format import IMAGE_SHAPE, TestSet, TestSetCorrupt
from services.embedder.parts import FeatureParts
from services.embedder.pipeline import Pipeline, non_finite_rows
from services.embedder.runtime import Runner

log = get_logger("mfr.embedder")

CPU_BATCHES = (8, 16, 32, 64, 128, 256)
GPU_BATCHES = (32, 64, 128, 256, 512)
MEASURE_BUDGET_S = 6.0  # at most this long choosing a batch size
MIN_GAIN = 1.05  # a larger batch must be 5% faster to be chosen


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


def choose_batch_size(runner: Runner, max_images: int | None = None,
                      candidates: Sequence[int] | None = None,
                      budget_s: float = MEASURE_BUDGET_S) -> int:
    """The batch size with the best measured images/s (smallest of near-equals).

    Candidates are tried in increasing order, each after a warm-up run, until
    a larger batch stops paying (less than 5% faster), the time budget is
    spent, or the batch exceeds the work. Throughput barely depends on the
    pixels, so the probe batch is noise.
    """
    candidates = list(candidates or (GPU_BATCHES if runner.on_gpu else CPU_BATCHES))
    if max_images:
        fitting = [b for b in candidates if b <= max_images]
        candidates = fitting or candidates[:1]
    rng = np.random.default_rng(0)
    probe = rng.standard_normal((candidates[-1], 3, *IMAGE_SHAPE[:2]), dtype=np.float32)
    started = time.perf_counter()
    best, best_rate = candidates[0], 0.0
    for size in candidates:
        t0 = time.perf_counter()
        runner.run(probe[:size])  # warm-up: allocations, kernel selection
        warm = time.perf_counter() - t0
        runs, elapsed = 0, 0.0
        while runs < 2 or elapsed < 0.25:
            t0 = time.perf_counter()
            runner.run(probe[:size])
            elapsed += time.perf_counter() - t0
            runs += 1
        rate = runs * size / elapsed
        log.debug("batch size probe", batch=size, images_per_s=round(rate, 1))
        if rate > best_rate * MIN_GAIN:
            best, best_rate = size, rate
        elif rate <= best_rate:
            break
        spent = time.perf_counter() - started
        if spent + 2 * (warm + elapsed) > budget_s:  # the next size costs about twice this one
            break
    return best


def job_identity(testset: TestSet, model_hash: str, mean: float, std: float) -> dict:
    """What the parts were computed from; parts under another identity are stale."""
    return {"testset_id": testset.id, "model_sha256": model_hash, "input_mean": float(mean),
            "input_std": float(std)}


def embed_testset(runner: Runner, model_hash: str, testset: TestSet, parts: FeatureParts,
                  mean: float, std: float, shards: Sequence[int] | None = None,
                  batch_size: int | None = None,
                  progress: Callable[[Progress], None] | None = None,
                  pipeline_hook: Callable[[Pipeline], None] | None = None) -> EmbedSummary:
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
    if batch_size is None:
        batch_size = choose_batch_size(runner, max(testset.shards[s].images for s in todo))
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

    pipeline = Pipeline(runner.run, testset, mean, std, batch_size, pad_batches=runner.on_gpu)
    if pipeline_hook:
        pipeline_hook(pipeline)
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
