"""Benchmark of 1:N identification (services/scorer/engine/kinds/identification.py).

Synthetic data: a gallery of ``--gallery`` unit vectors, ``--per-identity``
images per identity, and ``--probes`` probes, half of them mated (a gallery
image of their identity plus noise), half of new identities. Prints one JSON
document with, all measured in the same run (the machine is shared: only
ratios measured together mean anything):

- ``seconds``, ``searches_per_s``: ``score_identification`` alone (faiss index
  build, exact top-k search, canonical re-scoring, mate scores, threshold);
- ``peak_rss_mb`` (the process's peak, data generation included) and
  ``rss_before_mb`` (after the data was made, before scoring);
- ``gemm_projection_s``: the numpy float32 GEMM of ``--gemm-probes`` probes
  against the whole gallery, measured just before and just after, the faster
  kept, scaled to every probe: what a plain "all scores" pass costs at least;
  ``vs_gemm`` = seconds / that;
- ``candidates_per_probe``: non-mate scores re-scored canonically.

Cost scales as probes x gallery x D (the search is an exhaustive GEMM), the
re-scoring as probes x candidates x D; memory as (gallery + probes) x D x 4
bytes, twice for the gallery (the embeddings and faiss's copy).

Usage: ``python bench/identification.py [--gallery 1000000] [--probes 100000] [--dim 512]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mfr.protocols import Protocol
from services.scorer.engine.canonical import normalise
from services.scorer.engine.kinds.identification import score_identification
from services.scorer.engine.kinds.identification_search import resolve_device
from services.scorer.engine.universes import ImageLabels

CHUNK = 1 << 16


def dataset(gallery: int, probes: int, dim: int, per_identity: int, noise: float, seed: int):
    """(features float32 [gallery + probes, D], identity, probe mask)."""
    rng = np.random.default_rng(seed)
    features = np.empty((gallery + probes, dim), dtype=np.float32)
    for start in range(0, gallery, CHUNK):
        stop = min(start + CHUNK, gallery)
        features[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    identity = np.empty(gallery + probes, dtype=np.int64)
    identity[:gallery] = np.arange(gallery) // per_identity
    mated = probes // 2
    seen = rng.choice(gallery, mated, replace=False)
    identity[gallery:gallery + mated] = identity[seen]
    identity[gallery + mated:] = identity[gallery - 1] + 1 + np.arange(probes - mated)
    for start in range(0, probes, CHUNK):
        stop = min(start + CHUNK, probes)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        upto = min(stop, mated)
        if upto > start:  # mated probes: a gallery image of their identity plus noise
            block[: upto - start] = features[seen[start:upto]] + noise * block[: upto - start]
        features[gallery + start:gallery + stop] = block
    probe = np.arange(gallery + probes) >= gallery
    return features, identity, probe


def gemm_seconds(unit: np.ndarray, gallery: int, probes: int, sample: int) -> float:
    """numpy float32 GEMM time of ``sample`` probes x the gallery, scaled to every probe."""
    queries = unit[gallery:gallery + sample]
    out = np.empty((sample, CHUNK), dtype=np.float32)  # reused: the scores are not kept
    start = time.perf_counter()
    for first in range(0, gallery, CHUNK):  # a gallery view per block: no copy
        stop = min(first + CHUNK, gallery)
        np.matmul(queries, unit[first:stop].T, out=out[:, : stop - first])
    return (time.perf_counter() - start) * probes / sample


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gallery", type=int, default=1_000_000)
    parser.add_argument("--probes", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--per-identity", type=int, default=2)
    parser.add_argument("--noise", type=float, default=3.0)
    parser.add_argument("--fpir", default="1/1000")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--gemm-probes", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    made = time.perf_counter()
    features, identity, probe = dataset(args.gallery, args.probes, args.dim, args.per_identity,
                                        args.noise, args.seed)
    emb = normalise(features)
    del features
    made = time.perf_counter() - made
    labels = ImageLabels(identity, {"search": probe, "enrolled": ~probe})
    protocol = Protocol(id="1n", kind="identification", probe="search", gallery="enrolled",
                        fpir=Fraction(args.fpir))
    sample = min(args.gemm_probes, args.probes)
    before = gemm_seconds(emb.unit, args.gallery, args.probes, sample)
    rss_before = rss_mb()
    start = time.perf_counter()
    result = score_identification(emb, labels, protocol, device=args.device)
    seconds = time.perf_counter() - start
    after = gemm_seconds(emb.unit, args.gallery, args.probes, sample)
    gemm = min(before, after)  # the machine at its least loaded
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "device": resolve_device(args.device),
        "gallery": args.gallery, "probes": args.probes, "dim": args.dim,
        "data_and_normalise_s": round(made, 2),
        "seconds": round(seconds, 2),
        "searches_per_s": round(args.probes / seconds, 1),
        "rss_before_mb": round(rss_before),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "gemm_projection_s": round(gemm, 2),
        "gemm_gflops": round(2 * args.probes * args.gallery * args.dim / gemm / 1e9, 1),
        "vs_gemm": round(seconds / gemm, 3),
        "candidates_per_probe": round(result.candidates / args.probes, 3),
        "result": result.to_json(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
