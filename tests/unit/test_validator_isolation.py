"""Isolation and latency calibration: a crashing child is a clean rejection, the factor is cached."""

from __future__ import annotations

import json
import os
import signal
from functools import partial
from pathlib import Path

import onnx
import pytest

from mfr.challenge import load_challenge
from mfr.onnxzoo import build_tiny_model, hostile, save_model
from services.validator.latency import CACHE_FILE, LatencyCalibrator, ReferenceNetwork
from services.validator.sandbox import GIB, Sandbox, SandboxLimits
from services.validator.validator import Validator, ValidatorOptions

TRACK_A = load_challenge().track("A")
LIMITS = SandboxLimits(memory_bytes=4 * GIB, wall_seconds=60, threads=1)
# A stand-in for IResNet-100 (whose measurement is the benchmark's job): the
# tiny model, with a made-up V100 time.
STAND_IN = ReferenceNetwork("tiny-stand-in", 0.01, partial(build_tiny_model, seed=3))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("isolation") / "model.onnx"
    save_model(build_tiny_model(batch=1), path)
    return path


class Killer:
    """Observer that kills the child with ``signum`` when it reaches ``stage`` (armed once)."""

    def __init__(self, stage: str, signum: int) -> None:
        self.stage, self.signum, self.armed = stage, signum, True

    def __call__(self, stage: str, pid: int) -> None:
        if self.armed and stage == self.stage:
            self.armed = False
            os.kill(pid, self.signum)


def validator(tmp_path: Path, observer=None, factor: float | None = 1000.0) -> Validator:
    return Validator.create(tmp_path, latency_factor=factor,
                            options=ValidatorOptions(limits=LIMITS), observer=observer)


@pytest.fixture(scope="module")
def stalling_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stalls at the batch stage, so the kill lands there however slowly the test reads the
    child's messages (the tiny model can finish every stage before the parent reads one)."""
    path = tmp_path_factory.mktemp("isolation") / "stall.onnx"
    path.write_bytes(hostile.stall_at_batch(32))
    return path


@pytest.mark.parametrize(
    ("stage", "signum", "code", "says"),
    [
        ("latency", signal.SIGSEGV, "run_failed", "SIGSEGV"),
        ("load", signal.SIGABRT, "load_failed", "SIGABRT"),
        ("batch", signal.SIGKILL, "resource_limit", "memory limit"),
    ],
)
def test_a_crashing_child_is_a_clean_rejection_and_the_next_model_passes(
    tiny_model: Path, stalling_model: Path, tmp_path: Path, stage: str, signum: int, code: str,
    says: str,
):
    killer = Killer(stage, signum)
    checker = validator(tmp_path, observer=killer)
    report = checker.validate(stalling_model, TRACK_A)
    assert not killer.armed
    assert report.error_codes == [code]
    assert says in report.errors[0].message
    assert checker.validate(tiny_model, TRACK_A).ok


def test_accepted_model_is_stored_with_a_dynamic_batch(tiny_model: Path, tmp_path: Path):
    out = tmp_path / "evaluated.onnx"
    report = validator(tmp_path).validate(tiny_model, TRACK_A, model_out=out)
    assert report.ok and [w.code for w in report.warnings] == ["fixed_batch"]
    dim = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.HasField("dim_value")


def test_rejected_model_is_not_stored(tiny_model: Path, tmp_path: Path):
    out = tmp_path / "evaluated.onnx"
    report = validator(tmp_path, factor=1e-9).validate(tiny_model, TRACK_A, model_out=out)
    assert report.error_codes == ["latency"] and not out.exists()


class Counter:
    def __init__(self) -> None:
        self.children = 0

    def __call__(self, stage: str, pid: int) -> None:
        self.children += stage == "load"


def test_latency_reference_is_measured_once_then_cached(tmp_path: Path):
    counter = Counter()
    first = LatencyCalibrator(Sandbox(LIMITS, counter), tmp_path, reference=STAND_IN).scale()
    assert first.source == "measured" and counter.children == 1
    assert first.reference_ms > 0
    assert first.factor == pytest.approx(first.reference_ms / STAND_IN.v100_ms)
    assert "CPU" in first.device and "1 threads" in first.device

    cache = json.loads((tmp_path / CACHE_FILE).read_text())
    (entry,) = cache.values()
    assert entry["reference"] == "tiny-stand-in" and entry["reference_ms"] == first.reference_ms

    again = LatencyCalibrator(Sandbox(LIMITS, counter), tmp_path, reference=STAND_IN).scale()
    assert again.source == "cached" and again.factor == first.factor
    assert counter.children == 1  # no second measurement

    # Another thread count is another machine configuration: measured anew, kept beside.
    other = SandboxLimits(memory_bytes=LIMITS.memory_bytes, wall_seconds=60, threads=2)
    third = LatencyCalibrator(Sandbox(other, counter), tmp_path, reference=STAND_IN).scale()
    assert third.source == "measured" and counter.children == 2
    assert len(json.loads((tmp_path / CACHE_FILE).read_text())) == 2

    pinned = LatencyCalibrator(Sandbox(LIMITS, counter), tmp_path, reference=STAND_IN,
                               pinned_factor=2.5).scale()
    assert (pinned.source, pinned.factor, counter.children) == ("pinned", 2.5, 2)


def test_a_corrupt_cache_is_measured_again(tmp_path: Path):
    (tmp_path / CACHE_FILE).write_text("{not json")
    scale = LatencyCalibrator(Sandbox(LIMITS), tmp_path, reference=STAND_IN).scale()
    assert scale.source == "measured"
    assert json.loads((tmp_path / CACHE_FILE).read_text())


def test_report_carries_device_factor_and_scaled_limit(tiny_model: Path, tmp_path: Path):
    calibrator = LatencyCalibrator(Sandbox(LIMITS), tmp_path, reference=STAND_IN)
    report = Validator(calibrator, ValidatorOptions(limits=LIMITS)).validate(tiny_model, TRACK_A)
    scale = calibrator.scale()
    assert report.latency_factor == scale.factor
    assert report.latency_limit_ms == pytest.approx(10.0 * scale.factor)
    assert report.device == scale.device
