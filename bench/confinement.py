"""What confining a model's process costs: validation and embedding, with and without.

"With": the platform's path (mfr/sandbox: the fork server exec'd with an allow-listed
environment, Landlock, seccomp). "Without": the path before it, the standard library's
forkserver with only the resource limits, in the same run, in ABAB order so drifting
load hits both alike. A model of ``--depth`` (IResNet, random weights) is validated
against track A ``--rounds`` times each way, and embeds a synthetic test set's first
shard in a model process that is started, runs, and stops. A first round (each path's
fork server starting) is reported apart. Prints one JSON document.

    python bench/confinement.py [--depth 18] [--rounds 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from mfr.challenge import load_challenge
from mfr.onnxzoo import build_iresnet, save_model
from mfr.sandbox.limits import limit_resources
from services.embedder.worker import sandbox as embedder_sandbox
from services.embedder.worker.child import CHILD_LOG as EMBED_LOG
from services.embedder.worker.child import ChildSpec
from services.embedder.worker.child import child_main as embed_main
from services.validator.probe import CHILD_LOG, child_main
from services.validator.sandbox import Sandbox, SandboxLimits
from services.validator.validator import Validator, ValidatorOptions


def _limited(main, log_name, workdir, memory, file_bytes, cpu, job, conn):
    limit_resources(Path(workdir), memory, file_bytes, cpu, log_name)
    main(job, conn)


def _unconfined(preload: str, main, log_name: str, workdir: str, memory: int, file_bytes: int,
                cpu: bool, job):
    """The former start path: a stdlib forkserver child with the resource limits only."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([preload])
    ours, theirs = ctx.Pipe(duplex=True)
    process = ctx.Process(target=_limited, daemon=True,
                          args=(main, log_name, workdir, memory, file_bytes, cpu, job, theirs))
    process.start()
    theirs.close()
    return process, ours


class UnconfinedSandbox(Sandbox):
    def start(self, job, target=child_main, args=None):
        return _unconfined("services.validator.probe", child_main, CHILD_LOG, job.workdir,
                           job.memory_bytes, job.file_bytes, True, job)


def _validate(root: Path, model: Path, limits: SandboxLimits, confined: bool) -> float:
    sandbox = Sandbox(limits) if confined else UnconfinedSandbox(limits)
    validator = Validator.create(root / "cache", latency_factor=1000.0,
                                 options=ValidatorOptions(limits=limits))
    validator.sandbox = sandbox
    start = time.perf_counter()
    report = validator.validate(model, load_challenge().track("A"))
    assert report.ok, report.errors
    return time.perf_counter() - start


def _embed(root: Path, model: Path, testset: Path, threads: int, confined: bool) -> float:
    workdir = Path(tempfile.mkdtemp(dir=root))
    shutil.copyfile(model, workdir / "model.onnx")  # where a worker puts it
    spec = ChildSpec(str(workdir / "model.onnx"), "onnxruntime-cpu", threads, str(workdir),
                     8 << 30, 1 << 30, str(testset.parent))
    start = time.perf_counter()
    if confined:
        process = embedder_sandbox.ModelProcess(spec)
    else:
        process = embedder_sandbox.ModelProcess.__new__(embedder_sandbox.ModelProcess)
        process.spec = spec
        process.process, process.receiver = _unconfined(
            "services.embedder.worker.child", embed_main, EMBED_LOG, str(workdir), 8 << 30,
            1 << 30, True, spec)
        ready = process._next(time.monotonic() + 600, lambda: False, "loading")
        assert ready["kind"] == "ready", ready
    request = {"shard": 0, "testset_root": str(testset), "mean": 127.5, "std": 127.5,
               "batch": 32, "out": str(workdir / "features.npy")}
    process.embed(request, 600, lambda: False)
    process.close()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from mfr.testset.synth import synth_testset

    limits = SandboxLimits(threads=args.threads, wall_seconds=900)
    with tempfile.TemporaryDirectory(prefix="mfr-bench-confinement-") as tmp:
        root = Path(tmp)
        model = root / "model.onnx"
        save_model(build_iresnet(args.depth), model)
        testset = root / "testsets" / "t"
        synth_testset(testset, scale=0.0005, shard_size=256)
        times: dict[str, list[float]] = {k: [] for k in
                                         ("validate_with", "validate_without",
                                          "embed_with", "embed_without")}
        for round_ in range(args.rounds + 1):  # round 0 starts both fork servers: not kept
            for confined, suffix in ((True, "with"), (False, "without")):
                validate = _validate(root, model, limits, confined)
                embed = _embed(root, model, testset, args.threads, confined)
                if round_:
                    times[f"validate_{suffix}"].append(validate)
                    times[f"embed_{suffix}"].append(embed)
                else:
                    times[f"first_start_{suffix}"] = [validate, embed]
    first = {k.removeprefix("first_start_"): [round(x, 3) for x in times.pop(k)]
             for k in list(times) if k.startswith("first_start_")}
    median = {k: round(statistics.median(v), 3) for k, v in times.items()}
    print(json.dumps({
        "machine": platform.processor() or platform.machine(), "depth": args.depth,
        "threads": args.threads, "rounds": args.rounds,
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "median_s": median,
        "first_round_s": first,  # [validate, embed], with each fork server's start
        "ratio_validate": round(median["validate_with"] / median["validate_without"], 3),
        "ratio_embed": round(median["embed_with"] / median["embed_without"], 3),
    }, indent=2))


if __name__ == "__main__":
    main()
