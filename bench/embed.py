"""Embedder benchmark: images/s of the embedding pipeline against raw onnxruntime.

Same model (IResNet-50 shape, random weights, from mfr.onnxzoo), same batch
size, same thread count, same machine, measured in the same run as short
back-to-back pairs in ABBA order (raw then pipeline, pipeline then raw, ...),
so each pair sees the same load on a shared machine:

* raw: ``session.run`` over batches that were read, decoded and normalised
  before the clock started (what onnxruntime alone can do);
* pipeline: what ``mfr embed`` does after loading the model: read and verify
  every shard, preprocess, infer, write per-shard parts, assemble the .npy.

Prints one JSON document: ``ratio`` = the median of the per-pair ratios
pipeline / raw (the figure to quote), ``ratio_of_medians`` and ``ratio_best``
(best pipeline / best raw: the least disturbed runs) beside it, and
``cpu_ratio`` = raw CPU seconds an image / pipeline CPU seconds an image
(process CPU time of all threads: what the pipeline's reading, hashing,
preprocessing and writing add, and what the throughput ratio tends to on an
otherwise idle machine where both are CPU-bound; it is far less disturbed by
other processes than wall time).

    python bench/embed.py [--depth 50] [--images 32] [--batch 16] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mfr.cpus import physical_cores
from mfr.logs import configure_logging
from mfr.manifest import Manifest
from mfr.onnxzoo import build_iresnet
from mfr.testset.format import TestSet, TestSetWriter
from mfr.testset.synth import synth_testset
from services.embedder.embedding import assemble, choose_batch_size, embed_testset, model_sha256
from services.embedder.parts import LocalParts
from services.embedder.pipeline import preprocess
from services.embedder.runtime import Runner


def bench_testset(root: Path, images: int, shard_size: int) -> TestSet:
    source = synth_testset(root / "synth", scale=0.001, seed=0)
    m = source.manifest
    pixels = np.concatenate([source.read_shard(s.index) for s in source.shards])[:images]
    with TestSetWriter(root / "bench", shard_size) as writer:
        writer.add(pixels)
        return writer.finish(Manifest(m.paths[:images], m.identities[:images], m.tags[:images]))


def raw_run(runner: Runner, batches: list[np.ndarray]) -> tuple[float, float]:
    """(images/s, CPU seconds an image) of plain session.run over ready batches."""
    started, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        runner.session.run([runner.output_name], {runner.input_name: batch})
    images = sum(len(b) for b in batches)
    return (images / (time.perf_counter() - started),
            (time.process_time() - cpu) / images)


def pipeline_run(runner: Runner, model: bytes, testset: TestSet, batch: int,
                 work: Path) -> tuple[float, float]:
    """(images/s, CPU seconds an image) of what `mfr embed` does once the model is loaded."""
    parts = LocalParts(work / "parts")
    parts.clear()
    started, cpu = time.perf_counter(), time.process_time()
    embed_testset(runner, model_sha256(model), testset, parts, 127.5, 127.5, batch_size=batch)
    assemble(testset, parts, work / "features.npy")
    return (testset.images / (time.perf_counter() - started),
            (time.process_time() - cpu) / testset.images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=physical_cores())
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--auto-batch", action="store_true",
                        help="Also report the batch size the embedder would choose.")
    args = parser.parse_args()
    configure_logging("console", "WARNING")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        testset = bench_testset(work, args.images, args.shard_size)
        model = build_iresnet(args.depth, seed=0).SerializeToString()
        runner = Runner(model, device="auto", threads=args.threads)
        # The raw loop gets its input ready-made: decoded, normalised, batched.
        pixels = np.concatenate([testset.read_shard(s.index) for s in testset.shards])
        batches = [preprocess(pixels[i:i + args.batch], 127.5, 127.5).copy()
                   for i in range(0, len(pixels), args.batch)]
        raw_run(runner, batches[:2])  # warm-up: allocations, kernel choice
        figures = {
            "model": f"iresnet{args.depth} (random weights)",
            "device": runner.info.device,
            "cpu": platform.processor() or platform.machine(),
            "onnxruntime": ort.__version__,
            "threads": runner.threads,
            "batch_size": args.batch,
            "images": testset.images,
            "shards": len(testset.shards),
            "raw_images_per_s": [],
            "pipeline_images_per_s": [],
        }
        pair_ratios = []
        cpu = {"raw": [], "pipeline": []}
        for round_number in range(args.rounds):
            order = ("raw", "pipeline") if round_number % 2 == 0 else ("pipeline", "raw")
            pair = {}
            for which in order:
                if which == "raw":
                    pair[which], cpu_each = raw_run(runner, batches)
                else:
                    pair[which], cpu_each = pipeline_run(runner, model, testset, args.batch, work)
                figures[f"{which}_images_per_s"].append(round(pair[which], 2))
                cpu[which].append(cpu_each)
            pair_ratios.append(pair["pipeline"] / pair["raw"])
        raw = statistics.median(figures["raw_images_per_s"])
        pipe = statistics.median(figures["pipeline_images_per_s"])
        figures["pair_ratios"] = [round(r, 3) for r in pair_ratios]
        figures["ratio"] = round(statistics.median(pair_ratios), 3)
        figures["ratio_of_medians"] = round(pipe / raw, 3)
        figures["ratio_best"] = round(max(figures["pipeline_images_per_s"])
                                      / max(figures["raw_images_per_s"]), 3)
        figures["cpu_s_per_image"] = {k: round(statistics.median(v), 4) for k, v in cpu.items()}
        figures["cpu_ratio"] = round(statistics.median(cpu["raw"])
                                     / statistics.median(cpu["pipeline"]), 3)
        if args.auto_batch:
            figures["auto_batch_size"] = choose_batch_size(runner, testset.images)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
