"""Validator benchmark: wall time to validate an R100-size (~250 MB) model on this machine.

Builds IResNet-100 with random weights (mfr.onnxzoo), measures the latency
reference once (uncached, in a fresh cache directory), then validates the
model as a bare .onnx and as model.zip against track A, timing each stage of
the sandboxed child. Prints one JSON document.

    python bench/validator.py [--threads N] [--skip-zip]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import zipfile
from pathlib import Path

from mfr.challenge import load_challenge
from mfr.onnxzoo import build_iresnet, save_model
from services.validator.latency import LatencyCalibrator
from services.validator.sandbox import Sandbox, SandboxLimits, default_threads
from services.validator.validator import Validator, ValidatorOptions


class StageClock:
    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []

    def __call__(self, stage: str, pid: int) -> None:
        self.marks.append((stage, time.perf_counter()))

    def split(self, end: float) -> dict[str, float]:
        stages = {}
        for (stage, start), (_, stop) in zip(self.marks, [*self.marks[1:], ("end", end)],
                                             strict=True):
            stages[stage] = round(stop - start, 2)
        self.marks.clear()
        return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--skip-zip", action="store_true")
    args = parser.parse_args()
    limits = SandboxLimits(threads=args.threads, wall_seconds=900)
    track = load_challenge().track("A")
    figures: dict = {"threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="mfr-bench-validator-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        model = root / "model.onnx"
        size = save_model(build_iresnet(100), model)
        figures["build_r100_s"] = round(time.perf_counter() - start, 2)
        figures["model_mb"] = round(size / 2**20, 3)

        clock = StageClock()
        calibrator = LatencyCalibrator(Sandbox(limits, clock), root / "cache")
        start = time.perf_counter()
        scale = calibrator.scale()
        figures["calibration"] = {
            "wall_s": round(time.perf_counter() - start, 2),
            "reference_ms": round(scale.reference_ms, 3),
            "factor": round(scale.factor, 3),
            "device": scale.device,
        }
        clock.marks.clear()
        validator = Validator(calibrator, ValidatorOptions(limits=limits), observer=clock)
        uploads = [("onnx", model)]
        if not args.skip_zip:
            archive = root / "model.zip"
            start = time.perf_counter()
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.write(model, "model.onnx")
            figures["zip_s"] = round(time.perf_counter() - start, 2)
            figures["zip_mb"] = round(archive.stat().st_size / 2**20, 3)
            uploads.append(("zip", archive))
        for kind, path in uploads:
            start = time.perf_counter()
            report = validator.validate(path, track)
            end = time.perf_counter()
            figures[f"validate_{kind}"] = {
                "wall_s": round(end - start, 2),
                "ok": report.ok,
                "errors": [f.code for f in report.errors],
                "latency_ms": round(report.latency_ms, 3),
                "latency_limit_ms": round(report.latency_limit_ms, 3),
                "stages_s": clock.split(end),
            }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
