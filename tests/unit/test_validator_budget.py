"""The time budget of a validation: derived from the track and the machine's latency scale,
a hanging model stopped at its budget, several validations at once, a full validator says so."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mfr.challenge import load_challenge
from mfr.cpus import usable_cpus
from mfr.errors import Unavailable
from mfr.onnxzoo import build_tiny_model, hostile, save_model
from services.validator.budget import BudgetPolicy, images_run, time_budget
from services.validator.config import SPARE_SERVER_THREADS, ValidatorSettings
from services.validator.latency import LatencyScale
from services.validator.sandbox import GIB, SandboxLimits
from services.validator.validator import Validator, ValidatorOptions

CHALLENGE = load_challenge()
TRACK_A, TRACK_B = CHALLENGE.track("A"), CHALLENGE.track("B")
EMBEDDER_SIZES = CHALLENGE.embedding.batch_sizes  # 32, 16, 8, 4, 2, 1
SCALE = LatencyScale(factor=2.0, device="test", reference_ms=0.0, source="pinned")


def test_the_images_the_probe_runs_are_counted_once_each():
    assert EMBEDDER_SIZES == (32, 16, 8, 4, 2, 1)
    # 50 timed runs + a batch of 32 + 4 one-by-one runs + 16 + 8 + 4 + 2 (1 and 32 are done).
    assert images_run(EMBEDDER_SIZES) == 116
    assert images_run((64, 32, 16, 8, 4, 2, 1)) == 180
    assert images_run(()) == 86


def test_the_budget_is_loading_plus_every_image_at_the_latency_limit_times_the_safety():
    policy = BudgetPolicy()  # safety 3, floor 30 s, 10 s + 0.05 s/MB loading
    limit_a = SCALE.limit_ms(TRACK_A.max_latency_ms)  # 20 ms here
    budget = time_budget(policy, limit_a, 100.0, EMBEDDER_SIZES, ceiling_s=900.0)
    # 3 x (10 + 0.05 x 100 + 116 x 0.020) = 3 x 17.32
    assert budget.seconds == pytest.approx(51.96)
    assert budget.clamp == ""
    assert budget.derivation() == (
        "3 x (loading 10 s + 0.05 s/MB x 100.0 MB + 116 images x the latency limit 20.000 ms)")

    limit_b = SCALE.limit_ms(TRACK_B.max_latency_ms)  # 40 ms here
    big = time_budget(policy, limit_b, 1024.0, EMBEDDER_SIZES, ceiling_s=900.0)
    assert big.seconds == pytest.approx(3 * (10 + 51.2 + 116 * 0.040))  # 197.52


def test_the_budget_stays_between_the_floor_and_the_ceiling():
    fast = time_budget(BudgetPolicy(), 1.0, 0.01, EMBEDDER_SIZES, ceiling_s=900.0)
    assert fast.seconds == pytest.approx(3 * (10 + 0.0005 + 0.116))
    tiny = time_budget(BudgetPolicy(floor_s=60.0), 1.0, 0.01, EMBEDDER_SIZES, ceiling_s=900.0)
    assert (tiny.seconds, tiny.clamp) == (60.0, "floor")
    assert tiny.derivation().endswith("raised to the floor of 60 s")
    slow = time_budget(BudgetPolicy(), 10_000.0, 1.0, EMBEDDER_SIZES, ceiling_s=300.0)
    assert (slow.seconds, slow.clamp) == (300.0, "ceiling")
    assert slow.derivation().endswith("capped at the validator's limit of 300 s")


# A pinned factor of 0.01 makes track A's limit 0.1 ms, and this policy the budget
# of a small model 2 x (2 s + 116 x 0.1 ms) = about 4 s; the wall limit stays 60 s.
QUICK = BudgetPolicy(safety=2.0, floor_s=1.0, load_s=2.0)
LIMITS = SandboxLimits(memory_bytes=2 * GIB, wall_seconds=60.0, threads=1)


class Staged:
    """Observer: an event per stage reached (by any validation)."""

    def __init__(self) -> None:
        self.reached: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def event(self, stage: str) -> threading.Event:
        with self._lock:
            return self.reached.setdefault(stage, threading.Event())

    def __call__(self, stage: str, pid: int) -> None:
        self.event(stage).set()


def quick_validator(tmp_path: Path, observer=None, **options) -> Validator:
    return Validator.create(tmp_path / "cache", latency_factor=0.01,
                            options=ValidatorOptions(limits=LIMITS, budget=QUICK, **options),
                            observer=observer)


@pytest.fixture(scope="module")
def hanging_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("budget") / "hang.onnx"
    path.write_bytes(hostile.hang())
    return path


def test_a_model_that_never_finishes_is_stopped_at_its_budget_not_the_wall_limit(
        hanging_model: Path, tmp_path: Path):
    checker = quick_validator(tmp_path)
    expected = time_budget(QUICK, 0.1, hanging_model.stat().st_size / 2**20, EMBEDDER_SIZES,
                           ceiling_s=LIMITS.wall_seconds)
    assert 4.0 < expected.seconds < 4.1
    started = time.monotonic()
    report = checker.validate(hanging_model, TRACK_A, batch_sizes=EMBEDDER_SIZES)
    took = time.monotonic() - started
    assert report.error_codes == ["timeout"]
    message = report.errors[0].message
    assert f"within its time budget of {expected.seconds:.1f} s" in message
    assert "(stopped while timing 50 single-image runs)" in message
    assert "2 x (loading 2 s + 0.05 s/MB" in message
    assert "116 images x the latency limit 0.100 ms" in message
    assert took < 40  # the budget (4 s) stopped it, not the 60 s wall limit


def test_a_full_validator_refuses_at_once_and_a_free_one_validates(
        hanging_model: Path, tmp_path: Path):
    staged = Staged()
    checker = quick_validator(tmp_path, staged, max_concurrent=1, max_waiting=0)
    hung: list = []
    worker = threading.Thread(target=lambda: hung.append(checker.validate(hanging_model, TRACK_A)))
    worker.start()
    try:
        assert staged.event("latency").wait(30), "the hanging model never started running"
        with pytest.raises(Unavailable) as busy:
            checker.validate(hanging_model, TRACK_A)
        assert busy.value.code == "validator_busy"
    finally:
        worker.join(60)
    assert hung[0].error_codes == ["timeout"]
    tiny = tmp_path / "tiny.onnx"
    save_model(build_tiny_model(), tiny)
    # Free again; with a generous factor the tiny model passes.
    assert Validator.create(tmp_path / "cache", latency_factor=1000.0,
                            options=ValidatorOptions(limits=LIMITS)).validate(tiny, TRACK_A).ok


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in (("S3_ENDPOINT", "127.0.0.1:1"), ("S3_ACCESS_KEY", "a"),
                        ("S3_SECRET_KEY", "b"), ("SERVICE_TOKEN", "t" * 32)):
        monkeypatch.setenv(f"MFR_{name}", value)
    for name in ("VALIDATOR_CONCURRENCY", "VALIDATOR_THREADS", "VALIDATOR_WAITING",
                 "MAX_WORKERS", "VALIDATOR_TIMEOUT_S"):
        monkeypatch.delenv(f"MFR_{name}", raising=False)
    return monkeypatch


def test_by_default_several_validations_share_the_cores_without_oversubscribing(s3_env):
    settings = ValidatorSettings()
    options = settings.options()
    assert options.max_concurrent >= 2
    assert options.limits.threads >= 1
    assert options.limits.threads * options.max_concurrent <= max(usable_cpus(),
                                                                  options.max_concurrent)
    assert options.limits.wall_seconds == 900.0
    assert settings.max_workers >= options.admitted + SPARE_SERVER_THREADS


def test_the_server_gets_a_thread_for_every_admitted_call_and_the_health_checks(s3_env):
    s3_env.setenv("MFR_VALIDATOR_CONCURRENCY", "6")
    s3_env.setenv("MFR_VALIDATOR_WAITING", "3")
    settings = ValidatorSettings()
    assert settings.options().max_concurrent == 6
    assert settings.max_workers == 6 + 3 + SPARE_SERVER_THREADS
    s3_env.setenv("MFR_MAX_WORKERS", "32")
    assert ValidatorSettings().max_workers == 32  # more is kept
