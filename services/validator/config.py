"""The validator's settings: the model checks (also what ``mfr validate`` reads) and the process."""

from __future__ import annotations

import onnxruntime as ort
from pydantic import Field, PositiveFloat, PositiveInt

from mfr.settings import (
    GRPC_PORTS,
    METRICS_PORTS,
    CacheSettings,
    ChallengeSettings,
    ServiceSettings,
    StorageSettings,
)
from services.validator.sandbox import SandboxLimits, default_threads
from services.validator.validator import ValidatorOptions

MIB = 1024 * 1024


class ModelCheckSettings(CacheSettings):
    """``MFR_CACHE_DIR`` holds the latency reference; ``MFR_LATENCY_FACTOR`` pins the factor."""

    latency_factor: PositiveFloat | None = None
    validator_memory_mb: PositiveInt = 6144
    validator_timeout_s: PositiveFloat = 300.0
    validator_threads: int = Field(default=0, ge=0)  # 0: the usable CPUs, at most 8
    validator_concurrency: PositiveInt = 1
    # "auto": CUDA when this onnxruntime has it, else CPU; or a comma-separated list.
    validator_providers: str = "auto"

    def providers(self) -> tuple[str, ...]:
        if self.validator_providers != "auto":
            return tuple(p.strip() for p in self.validator_providers.split(",") if p.strip())
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ("CUDAExecutionProvider", "CPUExecutionProvider")
        return ("CPUExecutionProvider",)

    def options(self) -> ValidatorOptions:
        limits = SandboxLimits(
            memory_bytes=self.validator_memory_mb * MIB,
            wall_seconds=self.validator_timeout_s,
            threads=self.validator_threads or default_threads(),
            providers=self.providers(),
        )
        return ValidatorOptions(limits=limits, max_concurrent=self.validator_concurrency)


class ValidatorSettings(ServiceSettings, StorageSettings, ChallengeSettings, ModelCheckSettings):
    """The validator process: no database (it reads uploads and writes models in S3 only)."""

    grpc_port: int = GRPC_PORTS["validator"]
    metrics_port: int = METRICS_PORTS["validator"]
