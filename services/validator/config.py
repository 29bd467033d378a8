"""The validator's settings: the model checks (also what ``mfr validate`` reads) and the process."""

from __future__ import annotations

import onnxruntime as ort
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from mfr.gpu import gpu_present
from mfr.settings import (
    GRPC_PORTS,
    METRICS_PORTS,
    CacheSettings,
    ChallengeSettings,
    ConfinementSettings,
    ServiceSettings,
    ServiceTokenSettings,
    StorageSettings,
)
from services.validator.budget import BudgetPolicy
from services.validator.sandbox import SandboxLimits, default_concurrency, default_threads
from services.validator.validator import ValidatorOptions

MIB = 1024 * 1024
# Server threads kept free of Validate calls: health checks, reflection.
SPARE_SERVER_THREADS = 4


class ModelCheckSettings(CacheSettings, ConfinementSettings):
    """``MFR_CACHE_DIR`` holds the latency reference; ``MFR_LATENCY_FACTOR`` pins the factor."""

    latency_factor: PositiveFloat | None = None
    """How much slower this machine is than the V100 of the latency limits, which are
    multiplied by it (unset: measured once and kept in the cache directory)."""
    validator_memory_mb: PositiveInt = 6144
    """Memory limit of the model's process, in MiB."""
    validator_timeout_s: PositiveFloat = 900.0
    """The ceiling of every validation's time budget (services/validator/budget.py)."""
    validator_min_timeout_s: PositiveFloat = 30.0
    """The floor of every validation's time budget."""
    validator_time_safety: float = Field(default=3.0, ge=1.0)
    """The time budget is this factor times the expected time of the checks."""
    validator_concurrency: NonNegativeInt = 0
    """Validations run at once (0: the usable CPUs // 4, at least 2, at most 8)."""
    validator_waiting: NonNegativeInt | None = None
    """Validations that may wait for a turn (unset: as many as run at once); more are
    refused with ``validator_busy``."""
    validator_threads: NonNegativeInt = 0
    """onnxruntime threads of one validation (0: the usable CPUs // concurrency, at most 8)."""
    validator_providers: str = "auto"
    """onnxruntime providers, comma-separated; ``auto``: CUDA when this onnxruntime has it
    and a GPU is here, else CPU."""

    def providers(self) -> tuple[str, ...]:
        if self.validator_providers != "auto":
            return tuple(p.strip() for p in self.validator_providers.split(",") if p.strip())
        # CUDA only with a GPU: onnxruntime-gpu lists its provider on any machine.
        if "CUDAExecutionProvider" in ort.get_available_providers() and gpu_present():
            return ("CUDAExecutionProvider", "CPUExecutionProvider")
        return ("CPUExecutionProvider",)

    def concurrency(self) -> int:
        return self.validator_concurrency or default_concurrency()

    def options(self) -> ValidatorOptions:
        concurrency = self.concurrency()
        limits = SandboxLimits(
            memory_bytes=self.validator_memory_mb * MIB,
            wall_seconds=self.validator_timeout_s,
            threads=self.validator_threads or default_threads(concurrency),
            providers=self.providers(),
            confined=not self.allow_unconfined_models,
        )
        budget = BudgetPolicy(safety=self.validator_time_safety,
                              floor_s=self.validator_min_timeout_s)
        return ValidatorOptions(limits=limits, budget=budget, max_concurrent=concurrency,
                                max_waiting=self.validator_waiting)


class ValidatorSettings(ServiceSettings, ServiceTokenSettings, StorageSettings, ChallengeSettings,
                        ModelCheckSettings):
    """The validator process: no database (it reads uploads and writes models in S3 only)."""

    grpc_port: int = GRPC_PORTS["validator"]
    metrics_port: int = METRICS_PORTS["validator"]

    @model_validator(mode="after")
    def _threads_for_every_call(self) -> ValidatorSettings:
        # Every Validate call admitted (running or waiting) holds a server thread;
        # health checks must still find one, or a busy validator looks dead.
        needed = self.options().admitted + SPARE_SERVER_THREADS
        self.max_workers = max(self.max_workers, needed)
        return self
