"""Settings of the scorer API and its workers (``MFR_SCORER_*``), one class per process.

Nothing here changes a number on the leaderboard: tile size and floor
settings only decide how the exact work is cut (docs/scoring-service.md).
They are read by whoever plans a job and are baked into its plan, so workers
with different settings still agree on every tile.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from mfr.cpus import usable_cpus
from mfr.settings import (
    GRPC_PORTS,
    METRICS_PORTS,
    DatabaseSettings,
    Env,
    ServiceSettings,
    ServiceTokenSettings,
    StorageSettings,
    WorkerSettings,
)
from services.scorer.engine.floors import FloorSettings
from services.scorer.engine.tiles import TILE_SIZE


class ScorerSettings(ServiceSettings, ServiceTokenSettings, DatabaseSettings, StorageSettings):
    """The scorer API: records jobs and reads them (no heavy work)."""

    grpc_port: int = GRPC_PORTS["scorer"]
    metrics_port: int = METRICS_PORTS["scorer"]
    scorer_watch_poll_s: float = Field(0.5, gt=0)
    """WatchJob's polling period of PostgreSQL."""


class ScorerTuning(Env):
    """How a worker cuts and retries the work (what the plan, tile and merge steps read)."""

    scorer_tile_size: int = Field(TILE_SIZE, ge=1)
    """Rows and columns per impostor tile of the grid (the engine's measured default)."""
    scorer_attempts: int = Field(3, ge=1)
    """A tile (or a plan or merge step) that fails this many times fails its job."""
    scorer_keep_partials: bool = False
    """Keep the tile partials of a finished job (default: deleted once the result is written)."""
    scorer_floors: dict[str, int] = Field(default_factory=dict)
    """Floor tuning, FloorSettings fields as JSON (engine defaults when empty): candidate
    memory versus retry rounds. Estimated ROC points depend on it."""
    scorer_fault_tile_delay_s: float = 0.0
    """Test-only fault injection: sleep this long at the start of every tile step."""
    scorer_fault_fail_tile: str = ""
    """Test-only fault injection: raise in the step of the tile with this key (``*``: every
    tile)."""

    @field_validator("scorer_floors")
    @classmethod
    def _known_floor_fields(cls, floors: dict[str, int]) -> dict[str, int]:
        try:
            FloorSettings(**floors)  # unknown names stop start-up, not the first job
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        return floors

    def floor_settings(self) -> FloorSettings:
        return FloorSettings(**self.scorer_floors)


class ScorerWorkerSettings(ServiceSettings, ServiceTokenSettings, DatabaseSettings, StorageSettings,
                           WorkerSettings, ScorerTuning):
    """A scorer worker: drains the tile queue."""

    grpc_port: int = GRPC_PORTS["scorer-worker"]
    metrics_port: int = METRICS_PORTS["scorer-worker"]
    scorer_backend: str = "auto"
    """Scoring backend: ``auto`` (GPU when torch sees CUDA), ``cpu`` or ``gpu``."""
    scorer_precision: str = "auto"
    """Candidate-search precision of the CPU backend: ``auto`` (int8 when its kernel
    proves exact), ``int8`` or ``fp32``. No reported number depends on it."""
    scorer_threads: int = Field(0, ge=0)
    """BLAS threads of one worker; 0: the cores this process may use (cgroup-aware)."""
    scorer_retry_wait_s: int = Field(1, ge=0)
    """Seconds before a failed task runs again."""
    scorer_task_deadline_s: float = Field(3600.0, gt=0)
    """A plan, tile or merge step still running after this long is abandoned and retried
    (counted as a failure), even while its worker's heartbeat goes on."""
    scorer_heartbeat_s: float = Field(10.0, gt=0)
    """Worker heartbeat period."""
    scorer_stalled_s: float = Field(30.0, gt=0)
    """Heartbeat silence after which a worker's task is retried."""
    scorer_reap_every_s: float = Field(10.0, gt=0)
    """How often each worker looks for tasks of stalled workers."""
    scorer_poll_s: float = Field(5.0, gt=0)
    """Queue polling when no notification arrives (LISTEN/NOTIFY wakes workers at once)."""
    scorer_cached_jobs: int = Field(2, ge=1)
    """Jobs whose normalised features a worker keeps in memory."""

    def blas_threads(self) -> int:
        return self.scorer_threads or usable_cpus()
