"""The embedder's and the scorer's GPU checks, as one short run on a lent H100/H200.

a. torch-cuda features of IResNet-100 (random weights) on a synthetic test set, through
   the platform's pipeline at the challenge's batch size, in two separate processes:
   bit-identical (``np.array_equal`` and sha256 of the bytes).
b. torch-cuda against onnxruntime-cpu: the parity case (synth-lda-400 on a synthetic test
   set, as tests/unit/test_embedder_torch.py) and IResNet-100 on random images within 1e-4
   per component of the unit vectors; identical TARs and ranking score on the parity case
   (``mfr score --json --backend cpu`` of both matrices).
c. IResNet-100 images/s at batch 256: ``TorchRunner.run`` (numpy in and out) against the
   bare converted graph on a device tensor, same run, same outputs; medians; peak memory.
d. The scorer: bench/gpu_check.py's ``check_moderate`` (GPU and CPU JSON byte-identical).
e. 1:N identification: n/a, the project searches on the CPU (faiss-cpu).

``--device cpu``: the same flow on torch's CPU device ((d): the scorer's torch backend on
the CPU, gpu_check's dry run). A check that cannot run says ``skipped: why``. Exit 0 when no
check failed (``--strict``: and none was skipped), else 1. One JSON line per check goes to
``$OUT/gpu_all.json`` when OUT is set; a table ends the output. ``bash bench/gpu_all.sh``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.gpu_check import check_moderate, cli_json, log

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE, TOLERANCE_TEXT = 1e-4, "1e-4"
IDENTIFICATION_NA = "n/a: 1:N search runs on the CPU"
PASS, FAIL, SKIPPED, NA = "pass", "FAIL", "skipped", "n/a"


@dataclass
class Check:
    key: str
    title: str
    status: str = SKIPPED
    result: str = ""
    figure: str = ""
    data: dict = field(default_factory=dict)

    def record(self) -> dict:
        return {"check": self.key, "title": self.title, "status": self.status,
                "result": self.result, "figure": self.figure, **self.data}


def exit_code(checks: list[Check], strict: bool = False) -> int:
    """0 when every check that ran passed (``strict``: and none was skipped), else 1."""
    bad = {FAIL, SKIPPED} if strict else {FAIL}
    return int(any(c.status in bad for c in checks))


def table(checks: list[Check]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "/").replace("\n", " ")

    lines = ["| check | result | figure | pass/fail |", "|---|---|---|---|"]
    lines += [f"| {c.key}. {cell(c.title)} | {cell(c.result)} | {cell(c.figure)} | {c.status} |"
              for c in checks]
    return "\n".join(lines)


def identification_check() -> Check:
    """(e): the project keeps 1:N search on the CPU; the row says so rather than pretend."""
    from services.scorer.engine.kinds.identification_search import faiss_gpus

    gpus = faiss_gpus()  # 0 without faiss or with faiss-cpu
    figure = (f"faiss sees {gpus} GPU(s): no GPU-vs-CPU check written" if gpus else
              "the project: faiss-cpu IndexFlatIP; no faiss GPU wheel for sm_90")
    return Check("e", "GPU identification equal to CPU", NA, IDENTIFICATION_NA, figure,
                 {"faiss_gpus": gpus})


class Recorder:
    """JSON lines to ``$OUT/gpu_all.json`` (nothing when OUT is unset)."""

    def __init__(self) -> None:
        self.path = Path(os.environ["OUT"], "gpu_all.json") if os.environ.get("OUT") else None
        self.lines: list[str] = []

    def __call__(self, line: dict) -> None:
        self.lines.append(json.dumps(line, default=float))
        if self.path:
            self.path.write_text("\n".join(self.lines) + "\n")


def unit(features: np.ndarray) -> np.ndarray:
    return features / np.linalg.norm(features.astype(np.float64), axis=1, keepdims=True)


def embed_testset(model_path: Path, testset_dir: Path, runtime: str, batch: int) -> np.ndarray:
    """Every shard through the embedder's pipeline (padded batches), as ``mfr embed`` does,
    on ``runtime`` itself (a fallback to onnxruntime is an error here)."""
    import onnx

    from mfr.modelcheck.rules import detect_normalisation
    from mfr.testset.format import TestSet
    from services.embedder.pipeline import Pipeline
    from services.embedder.runtime import load_model_bytes, open_runtime

    model = load_model_bytes(model_path)
    runner = open_runtime(model, runtime)
    if runner.info.name != runtime or runner.info.fallback_reason:
        raise RuntimeError(f"{runtime} asked for, {runner.info.name} given "
                           f"({runner.info.fallback_reason or 'no reason'})")
    testset = TestSet(testset_dir)
    (mean, std), _ = detect_normalisation(onnx.load_model_from_string(model).graph)
    parts: dict[int, np.ndarray] = {}
    Pipeline(runner.run, testset, mean, std, batch, pad_batches=True).embed(
        list(range(len(testset.shards))), lambda index, rows: parts.__setitem__(index, rows))
    return np.concatenate([parts[i] for i in range(len(testset.shards))])


@dataclass
class Context:
    args: argparse.Namespace
    runtime: str
    work: Path
    testset: Path
    deep_path: Path
    deep_name: str
    torch: object
    deep_runner: object = None

    def runner(self):
        """One TorchRunner of the deep model, shared by (b) and (c)."""
        if self.deep_runner is None:
            from services.embedder.torch_runtime import TorchRunner

            self.deep_runner = TorchRunner(self.deep_path.read_bytes(), self.args.device)
        return self.deep_runner

    def sync(self) -> None:
        if self.args.device == "cuda":
            self.torch.cuda.synchronize()

    def embed_in_child(self, out: Path) -> float:
        """Seconds: a fresh Python process embeds the test set with the deep model."""
        clock = time.perf_counter()
        path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(self.deep_path),
             str(self.testset), self.runtime, str(self.args.embed_batch), str(out)],
            capture_output=True, text=True, cwd=ROOT, env=os.environ | {"PYTHONPATH": path},
            check=False)
        if done.returncode:
            raise RuntimeError(f"the embedding process failed:\n{done.stderr[-2000:]}")
        return time.perf_counter() - clock


def check_bit_identity(ctx: Context, check: Check) -> None:
    """(a) the same model, test set and runtime in two processes: the same bits."""
    outs, seconds = [], []
    for run in (1, 2):
        seconds.append(ctx.embed_in_child(ctx.work / f"deep-{run}.npy"))
        outs.append(np.load(ctx.work / f"deep-{run}.npy"))
        log(f"  (a) process {run}: {outs[-1].shape} in {seconds[-1]:.1f} s")
    first, second = outs
    digests = [hashlib.sha256(f.tobytes()).hexdigest() for f in outs]
    same = first.shape == second.shape and bool(np.array_equal(first, second))
    finite = bool(np.isfinite(first).all()) and bool(np.abs(first).sum(axis=1).all())
    check.status = PASS if same and finite and digests[0] == digests[1] else FAIL
    check.result = ("bit-identical" if same else "DIFFER") + ("" if finite else ", NON-FINITE")
    check.figure = (f"{first.shape[0]} x {first.shape[1]}, batch {ctx.args.embed_batch}, "
                    f"sha256 {' vs '.join(sorted({d[:12] for d in digests}))}")
    check.data.update(images=int(first.shape[0]), sha256=digests, seconds=seconds,
                      batch=ctx.args.embed_batch, model=ctx.deep_name, finite=finite)


def parity_documents(ctx: Context, features: dict[str, np.ndarray]) -> dict[str, dict]:
    """``mfr score --json --backend cpu`` of each matrix: its document."""
    from mfr.testset.format import TestSet

    manifest, docs = TestSet(ctx.testset).manifest_path, {}
    for runtime, matrix in features.items():
        np.save(ctx.work / f"parity-{runtime}.npy", matrix)
        paths = {"manifest": manifest, "features": ctx.work / f"parity-{runtime}.npy"}
        docs[runtime] = json.loads(cli_json(paths, "cpu")[0])
    return docs


def deep_difference(ctx: Context) -> float:
    """The deep model on random images: max |unit(torch) - unit(onnxruntime-cpu)|."""
    from services.embedder.runtime import Runner

    images = np.random.default_rng(9).standard_normal(
        (ctx.args.parity_images, 3, 112, 112)).astype(np.float32)
    reference = Runner(ctx.deep_path.read_bytes(), device="cpu").run(images)
    return float(np.abs(unit(ctx.runner().run(images)) - unit(reference)).max())


def check_parity(ctx: Context, check: Check) -> None:
    """(b) torch against onnxruntime-cpu: features within 1e-4, identical TARs."""
    from mfr.baselines.build import fit_baselines

    lda = ctx.work / "synth-lda-400.onnx"
    lda.write_bytes(fit_baselines()["synth-lda-400"].to_onnx("synth-lda-400").SerializeToString())
    features = {runtime: embed_testset(lda, ctx.testset, runtime, ctx.args.embed_batch)
                for runtime in ("onnxruntime-cpu", ctx.runtime)}
    lda_diff = float(np.abs(unit(features[ctx.runtime]) - unit(features["onnxruntime-cpu"])).max())
    log(f"  (b) synth-lda-400: max abs diff {lda_diff:.2e}")
    deep_diff = deep_difference(ctx)
    log(f"  (b) {ctx.deep_name}, {ctx.args.parity_images} random images: max abs diff "
        f"{deep_diff:.2e}")
    docs = parity_documents(ctx, features)
    # The features differ in their last bits, so thresholds do too; the rates may not.
    rates = {runtime: {pid: (p["tar"], p["genuine_accepted"], p["impostors_accepted"])
                       for pid, p in doc["protocols"].items()} for runtime, doc in docs.items()}
    ranking = {runtime: doc.get("ranking_score") for runtime, doc in docs.items()}
    same_rates = rates[ctx.runtime] == rates["onnxruntime-cpu"] and len(set(ranking.values())) == 1
    close = max(lda_diff, deep_diff) <= TOLERANCE
    check.status = PASS if close and same_rates else FAIL
    check.result = (f"{'within' if close else 'OVER'} {TOLERANCE_TEXT}; TARs "
                    f"{'identical' if same_rates else 'DIFFER'} ({len(rates[ctx.runtime])} "
                    "protocols)")
    check.figure = f"max abs diff: lda-400 {lda_diff:.1e}, {ctx.deep_name} {deep_diff:.1e}"
    check.data.update(lda_max_abs_diff=lda_diff, deep_max_abs_diff=deep_diff, rates=rates,
                      ranking_score=ranking, images=len(features[ctx.runtime]))


def check_throughput(ctx: Context, check: Check) -> None:
    """(c) images/s at the bench batch: TorchRunner.run against the bare converted graph."""
    torch, runner, batch = ctx.torch, ctx.runner(), ctx.args.bench_batch
    images = np.random.default_rng(11).standard_normal((batch, 3, 112, 112)).astype(np.float32)
    on_device = torch.from_numpy(images).to(runner.device)

    def bare():
        with torch.inference_mode():
            return runner.graph.run(on_device)

    if ctx.args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # The same function: bare's output is the runner's, bit for bit (and warms both up).
    same = bool(np.array_equal(runner.run(images), bare().float().cpu().numpy()))
    runs = {"runner": lambda: runner.run(images), "bare": bare}
    times: dict[str, list[float]] = {"runner": [], "bare": []}
    for index in range(ctx.args.repeats + 1):  # the first round warms up; AB BA AB ...
        for name in ("runner", "bare") if index % 2 else ("bare", "runner"):
            clock = time.perf_counter()
            runs[name]()
            ctx.sync()
            if index:
                times[name].append(time.perf_counter() - clock)
    rate = {name: batch / float(np.median(values)) for name, values in times.items()}
    peak = torch.cuda.max_memory_allocated() / 2**30 if ctx.args.device == "cuda" else 0.0
    ratio = rate["runner"] / rate["bare"]
    check.status = PASS if same else FAIL
    check.result = (f"{rate['runner']:.1f} images/s (bare {rate['bare']:.1f})"
                    + ("" if same else "; OUTPUTS DIFFER"))
    check.figure = f"runner/bare {ratio:.3f}" + (f", peak {peak:.1f} GiB" if peak else "")
    check.data.update(model=ctx.deep_name, batch=batch, images_per_s=rate, ratio=ratio,
                      seconds=times, gpu_peak_gib=peak, same_output=same)


def check_scorer(ctx: Context, check: Check) -> None:
    """(d) bench/gpu_check.py's moderate check: GPU and CPU print the same document."""
    out: dict = {}
    check_moderate(ctx.args.device, ctx.args.moderate, 512, out)
    moderate = out["moderate"]
    document = json.dumps(moderate.pop("document"), sort_keys=True).encode()
    check.status = PASS if moderate["identical_json"] else FAIL
    check.result = "byte-identical" if moderate["identical_json"] else "DIFFER"
    check.figure = (f"{moderate['images']:,} images; cpu {moderate['cpu_s']:.1f} s, "
                    f"{'gpu' if ctx.args.device == 'cuda' else 'torch cpu'} "
                    f"{moderate['gpu_s']:.1f} s")
    check.data.update(moderate, document_sha256=hashlib.sha256(document).hexdigest())


def titles(args: argparse.Namespace) -> list[Check]:
    runtime, deep = f"torch-{args.device}", args.deep_name
    gpu = "GPU" if args.device == "cuda" else "torch (CPU device)"
    return [Check("a", f"{runtime} embedding bit-identical across two processes"),
            Check("b", f"{runtime} within {TOLERANCE_TEXT} of onnxruntime-cpu; parity TARs equal"),
            Check("c", f"{deep} images/s at batch {args.bench_batch}: TorchRunner.run vs bare"),
            Check("d", f"scorer {gpu} backend JSON identical to CPU")]


def torch_problem(device: str):
    """(torch, None) or (None, why the torch checks cannot run here)."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    if device == "cuda" and not torch.cuda.is_available():
        return None, f"torch {torch.__version__} sees no CUDA device"
    return torch, None


def prepare(args: argparse.Namespace, torch) -> Context:
    from mfr.onnxzoo import build_iresnet, build_tiny_model
    from mfr.testset.synth import synth_testset

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    testset = synth_testset(work / "testset", scale=args.scale, seed=3, overwrite=True)
    model = build_iresnet(args.depth, seed=0) if args.depth else build_tiny_model(seed=4)
    deep_path = work / "deep.onnx"
    deep_path.write_bytes(model.SerializeToString())
    log(f"prepared: test set of {testset.images} images, {args.deep_name} "
        f"({deep_path.stat().st_size / 2**20:.0f} MiB)")
    return Context(args, f"torch-{args.device}", work, testset.root, deep_path, args.deep_name,
                   torch)


def environment(args: argparse.Namespace, torch) -> dict:
    from importlib.util import find_spec

    onnxruntime = __import__("onnxruntime") if find_spec("onnxruntime") else None
    return {"check": "environment", "device_mode": args.device, "cpus": os.cpu_count(),
            "python": sys.version.split()[0], "argv": sys.argv[1:],
            "onnxruntime": getattr(onnxruntime, "__version__", None),
            "torch": getattr(torch, "__version__", None),
            "gpu": torch.cuda.get_device_name(0) if torch and args.device == "cuda" else None}


def run_checks(args: argparse.Namespace, record: Recorder) -> list[Check]:
    torch, why = torch_problem(args.device)
    record(environment(args, torch))
    checks = titles(args)
    if why:
        for check in checks:
            check.result = f"skipped: {why}"
    else:
        ctx = prepare(args, torch)
        steps = (check_bit_identity, check_parity, check_throughput, check_scorer)
        for check, step in zip(checks, steps, strict=True):
            log(f"({check.key}) {check.title}")
            clock = time.perf_counter()
            try:
                step(ctx, check)
            except Exception as exc:  # noqa: BLE001 - one check's crash is its failure
                check.status, check.result = FAIL, f"error: {type(exc).__name__}: {exc}"[:300]
                check.data["traceback"] = traceback.format_exc()
            check.data["check_seconds"] = round(time.perf_counter() - clock, 2)
            log(f"({check.key}) {check.status}: {check.result} ({check.figure}) "
                f"in {check.data['check_seconds']:.1f} s")
    checks.append(identification_check())
    for check in checks:
        if check.status == SKIPPED:
            log(f"({check.key}) {check.result}")
        record(check.record())
    return checks


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--device", choices=("cuda", "cpu"), default=os.environ.get("GPU_ALL_DEVICE", "cuda"))
    add("--depth", type=int, default=100, help="IResNet depth of (a)-(c); 0: the tiny model")
    add("--bench-batch", type=int, default=256, help="(c)'s batch")
    add("--embed-batch", type=int, help="the pipeline's batch (default: the challenge's)")
    add("--scale", type=float, default=0.001, help="synthetic test set scale, (a) and (b)")
    add("--parity-images", type=int, default=64, help="(b)'s random images, deep model")
    add("--repeats", type=int, default=5, help="(c)'s timed runs of each")
    add("--moderate", type=int, default=60_000, help="(d)'s MR images (gpu_check)")
    add("--work", default="/tmp/mfr-gpu-all", help="scratch folder")
    add("--strict", action="store_true", help="a skipped check fails the run")
    add("--child", nargs=5, help=argparse.SUPPRESS)  # (a)'s processes
    args = parser.parse_args(argv)
    args.deep_name = f"IResNet-{args.depth}" if args.depth else "tiny model"
    if args.embed_batch is None and not args.child:
        from mfr.challenge import load_challenge

        args.embed_batch = load_challenge().embedding.batch_size
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:  # MODEL TESTSET RUNTIME BATCH OUT
        model, testset, runtime, batch, out = args.child
        np.save(out, embed_testset(Path(model), Path(testset), runtime, int(batch)))
        return 0
    clock = time.perf_counter()
    log(f"gpu_all: device {args.device}, python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    record = Recorder()
    checks = run_checks(args, record)
    code = exit_code(checks, args.strict)
    seconds = time.perf_counter() - clock
    record({"check": "summary", "exit": code, "seconds": round(seconds, 1),
            "statuses": {c.key: c.status for c in checks}})
    print(f"\ngpu_all ({args.device}) in {seconds:.0f} s, exit {code}")
    print(table(checks), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
