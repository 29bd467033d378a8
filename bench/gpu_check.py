"""GPU checks for the scoring engine, as one short run on a lent GPU machine.

1. ``mfr score --json`` on a moderate synthetic test set carrying every tag of
   the built-in challenge (mask x nonmask, children, four races, MR-All):
   the CPU and GPU backends must print byte-identical documents.
2. The canonical score on the GPU: bit-identical to numpy on random pairs.
3. Full MR-All size (1,624,305 x 512, synthetic, four race tags, five
   protocols in one pass) on the GPU backend: wall time of the engine, pairs/s,
   and the fraction of the cuBLAS float32 (TF32 off) GEMM roofline, the rate of
   a 16384x512 @ 512x16384 product (one tile's GEMM) measured in the same run.

Prints progress lines, then a short table and one JSON line; writes the JSON
to ``$OUT/gpu_check.json`` when ``OUT`` is set. Run from the repository root
with ``PYTHONPATH=.`` (``bench/gpu_check.sh``).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

from bench.synthetic import MR_CHALLENGE_TOML, RACE_IMAGES, RACES, mr_dataset

MR_ALL = sum(RACE_IMAGES)
ROOT = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def moderate_test_set(directory: Path, mr_count: int, dim: int) -> dict:
    """Manifest + features with every built-in tag; identities are strings."""
    features, identity, race = mr_dataset(mr_count, dim, seed=1)
    rows = [(f"mr/{i}.jpg", f"mr{identity[i]:06d}", f"mr;{RACES[race[i]]}")
            for i in range(mr_count)]
    kids, kid_identity, _ = mr_dataset(mr_count // 5, dim, seed=2)
    rows += [(f"kids/{i}.jpg", f"kid{kid_identity[i]:06d}", "children")
             for i in range(len(kids))]
    people = mr_count // 10
    mask, _, _ = mr_dataset(3 * people, dim, seed=3)
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((people, dim)).astype(np.float32)
    mask += 1.2 * np.repeat(centres, 3, axis=0)  # three images per person
    rows += [(f"mask/{i}.png", f"p{i // 3:06d}", "mask" if i % 3 == 0 else "nonmask")
             for i in range(3 * people)]
    all_features = np.concatenate([features, kids, mask]).astype(np.float32)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"manifest": directory / "m.csv", "features": directory / "f.npy"}
    with open(paths["manifest"], "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("path", "identity", "tags"))
        writer.writerows(rows)
    np.save(paths["features"], all_features)
    return paths


def cli_json(paths: dict, backend: str) -> tuple[bytes, float]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "score", "--manifest", str(paths["manifest"]),
         "--features", str(paths["features"]), "--json", "--backend", backend],
        capture_output=True, check=False, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
    if done.returncode:
        raise SystemExit(f"mfr score --backend {backend} failed:\n{done.stderr.decode()}")
    return done.stdout, time.perf_counter() - start


def sgemm_rate(torch, device: str, m: int, k: int, n: int, repeats: int = 20) -> float:
    """float32 GEMM FLOP/s (median), timed with CUDA events on a GPU."""
    a = torch.randn(m, k, device=device)
    b = torch.randn(n, k, device=device)
    for _ in range(3):
        a @ b.T
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b.T
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 1e3)
        else:
            clock = time.perf_counter()
            a @ b.T
            times.append(time.perf_counter() - clock)
    return 2 * m * k * n / float(np.median(times))


def full_mr_all(torch, device: str, count: int, dim: int):
    """Synthetic MR-All on the device (same recipe as bench/synthetic.py), copied to the host."""
    g = torch.Generator(device=device).manual_seed(0)
    identities = round(count * 242_143 / MR_ALL)
    share = torch.tensor(RACE_IMAGES, dtype=torch.float64, device=device) / MR_ALL
    identity_race = torch.multinomial(share, identities, replacement=True, generator=g)
    identity = torch.sort(torch.randint(0, identities, (count,), device=device, generator=g))[0]
    race_means = torch.randn(len(RACES), dim, device=device, generator=g)
    race_means *= 0.35 / race_means.norm(dim=1, keepdim=True)
    centres = torch.randn(identities, dim, device=device, generator=g)
    centres /= centres.norm(dim=1, keepdim=True)
    centres += race_means[identity_race]
    scale = (1.5 / dim ** 0.5) * torch.exp(0.25 * torch.randn(count, 1, device=device,
                                                               generator=g))
    features = centres[identity] + scale * torch.randn(count, dim, device=device, generator=g)
    return (features.cpu().numpy(), identity.cpu().numpy().astype(np.int64),
            identity_race[identity].cpu().numpy().astype(np.int64))


def check_moderate(device: str, mr_count: int, dim: int, out: dict) -> None:
    """1. CPU and GPU print the same document."""
    from services.scorer.engine import ImageLabels, score
    from services.scorer.engine.backends.gpu import TorchBackend

    paths = moderate_test_set(Path("/tmp/mfr-gpu-check"), mr_count, dim)
    if device == "cuda":
        gpu_doc, gpu_s = cli_json(paths, "gpu")
    else:
        from mfr.challenge import load_challenge
        from mfr.manifest import read_manifest

        clock = time.perf_counter()
        dry = score(np.load(paths["features"]), ImageLabels.from_manifest(
            read_manifest(paths["manifest"])), load_challenge(), backend=TorchBackend(device))
        gpu_doc, gpu_s = (json.dumps(dry.to_json()) + "\n").encode(), time.perf_counter() - clock
    cpu_doc, cpu_s = cli_json(paths, "cpu")
    out["moderate"] = {"images": int(np.load(paths["features"], mmap_mode="r").shape[0]),
                       "identical_json": gpu_doc == cpu_doc, "cpu_s": round(cpu_s, 2),
                       "gpu_s": round(gpu_s, 2), "document": json.loads(gpu_doc)}
    log(f"moderate: identical JSON {gpu_doc == cpu_doc} (cpu {cpu_s:.1f} s, gpu {gpu_s:.1f} s)")


def check_canonical(device: str, dim: int, out: dict) -> None:
    """2. Canonical bits on random pairs."""
    from services.scorer.engine.backends.cpu import CpuBackend
    from services.scorer.engine.backends.gpu import TorchBackend
    from services.scorer.engine.canonical import normalise

    rng = np.random.default_rng(5)
    emb = normalise(rng.standard_normal((50_000, dim)).astype(np.float32))
    first, second = rng.integers(0, 50_000, 300_000), rng.integers(0, 50_000, 300_000)
    gpu = TorchBackend(device)
    same = np.array_equal(CpuBackend().canonical(emb, first, second).view(np.int64),
                          gpu.canonical(emb, first, second).view(np.int64))
    out["canonical_bit_identical"] = bool(same)
    log(f"canonical scores bit-identical on 300,000 pairs: {same}")


def check_full(torch, device: str, count: int, dim: int, out: dict) -> None:
    """3. Full MR-All size."""
    from mfr.challenge import parse_challenge
    from services.scorer.engine import ImageLabels, score
    from services.scorer.engine.backends.gpu import TorchBackend

    out["sgemm_tflops_16384"] = sgemm_rate(torch, device, 16384, dim, 16384) / 1e12
    out["sgemm_tflops_4096"] = sgemm_rate(torch, device, 4096, dim, 4096) / 1e12
    log(f"float32 GEMM (TF32 off): {out['sgemm_tflops_16384']:.2f} TFLOP/s at 16384, "
        f"{out['sgemm_tflops_4096']:.2f} at 4096")
    features, identity, race = full_mr_all(torch, device, count, dim)
    if device == "cuda":
        torch.cuda.empty_cache()
    tags = {"mr": np.ones(count, bool)} | {r: race == i for i, r in enumerate(RACES)}
    challenge = parse_challenge(tomllib.loads(MR_CHALLENGE_TOML))
    last = [0.0]
    clock = time.perf_counter()

    def progress(done: int, total: int, round_number: int) -> None:
        if done == total or time.perf_counter() - last[0] > 10:
            last[0] = time.perf_counter()
            log(f"  round {round_number}: {done / total:6.1%} of {total:,} pairs, "
                f"{last[0] - clock:.1f} s")

    report = score(features, ImageLabels(identity, tags), challenge, backend=TorchBackend(device),
                   progress=progress)
    seconds = time.perf_counter() - clock
    pairs = count * (count - 1) // 2
    rate = pairs / seconds
    out["mr_all"] = {
        "images": count, "dim": dim, "pairs": pairs, "seconds": round(seconds, 2),
        "phases_s": {k: round(v, 2) for k, v in report.seconds.items()},
        "rounds": report.rounds, "pairs_per_s": rate,
        "roofline_fraction": rate * 2 * dim / (out["sgemm_tflops_16384"] * 1e12),
        "gpu_peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0,
        "protocols": {pid: {"tar": float(r.tar), "threshold": r.threshold,
                            "impostors_accepted": r.impostors_accepted,
                            "impostor": r.impostor, "genuine": r.genuine,
                            "candidates": r.candidates, "rounds": r.rounds}
                      for pid, r in report.results.items()},
    }


def print_table(out: dict) -> None:
    m, moderate = out["mr_all"], out["moderate"]
    print("\n| check | result |\n|---|---|")
    print(f"| device | {out['device']} |")
    print(f"| moderate ({moderate['images']:,} images): CPU and GPU JSON identical | "
          f"{moderate['identical_json']} (cpu {moderate['cpu_s']:.1f} s, "
          f"gpu {moderate['gpu_s']:.1f} s) |")
    print(f"| canonical score bit-identical (300k pairs) | {out['canonical_bit_identical']} |")
    print(f"| MR-All {m['images']:,} x {m['dim']}, 5 protocols | {m['seconds']} s, "
          f"rounds {m['rounds']} |")
    print(f"| pairs/s | {m['pairs_per_s']:.3e} |")
    print(f"| cuBLAS SGEMM 16384x512x16384 | {out['sgemm_tflops_16384']:.1f} TFLOP/s |")
    print(f"| fraction of that roofline | {m['roofline_fraction']:.3f} |")
    print(f"| GPU peak memory | {m['gpu_peak_gib']:.1f} GiB |")


def main() -> None:
    import torch

    # GPU_CHECK_DEVICE=cpu GPU_CHECK_MODERATE=2000 GPU_CHECK_FULL=20000: a dry run
    # of this script on torch's CPU device, to catch mistakes before a lease.
    device = os.environ.get("GPU_CHECK_DEVICE", "cuda")
    mr_count = int(os.environ.get("GPU_CHECK_MODERATE", "60000"))
    count = int(os.environ.get("GPU_CHECK_FULL", str(MR_ALL)))
    dim = 512
    name = torch.cuda.get_device_name(0) if device == "cuda" else "torch cpu (dry run)"
    out = {"device": name, "torch": torch.__version__, "cpus": os.cpu_count()}
    log(f"device {out['device']}, torch {out['torch']}, {out['cpus']} cpus")
    check_moderate(device, mr_count, dim, out)
    check_canonical(device, dim, out)
    check_full(torch, device, count, dim, out)
    print_table(out)
    print(json.dumps(out, default=float))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps(out, default=float,
                                                                        indent=1))


if __name__ == "__main__":
    main()
