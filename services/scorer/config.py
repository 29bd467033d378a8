"""Settings of the scorer API and its workers (``MFR_SCORER_*``), and the worker's thread count.

Nothing here changes a number on the leaderboard: tile size and floor
settings only decide how the exact work is cut (docs/scoring-service.md).
They are read by whoever plans a job and are baked into its plan, so workers
with different settings still agree on every tile.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mfr.cpus import usable_cpus
from services.scorer.engine.floors import FloorSettings
from services.scorer.engine.tiles import TILE_SIZE


class ScorerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MFR_SCORER_", extra="ignore")

    #: Rows and columns per impostor tile of the grid (the engine's measured default).
    tile_size: int = Field(TILE_SIZE, ge=1)
    #: BLAS threads of one worker; 0: the cores this process may use (cgroup-aware).
    threads: int = Field(0, ge=0)
    #: A tile (or a plan or merge step) that fails this many times fails its job.
    attempts: int = Field(3, ge=1)
    #: Seconds before a failed task runs again.
    retry_wait_s: int = Field(1, ge=0)
    #: Worker heartbeat period, and the silence after which its task is retried.
    heartbeat_s: float = Field(10.0, gt=0)
    stalled_s: float = Field(30.0, gt=0)
    #: How often each worker looks for tasks of stalled workers.
    reap_every_s: float = Field(10.0, gt=0)
    #: Queue polling when no notification arrives (LISTEN/NOTIFY wakes workers at once).
    poll_s: float = Field(5.0, gt=0)
    #: WatchJob's polling period of PostgreSQL.
    watch_poll_s: float = Field(0.5, gt=0)
    #: Keep the tile partials of a finished job (default: deleted once the result is written).
    keep_partials: bool = False
    #: Jobs whose normalised features a worker keeps in memory.
    cached_jobs: int = Field(2, ge=1)
    #: Floor tuning, FloorSettings fields as JSON (engine defaults when empty):
    #: candidate memory versus retry rounds. Estimated ROC points depend on it.
    floors: dict[str, int] = Field(default_factory=dict)
    #: Test-only fault injection: sleep this long at the start of every tile step ...
    fault_tile_delay_s: float = 0.0
    #: ... and raise in the step of the tile with this key ("*": every tile).
    fault_fail_tile: str = ""
    #: Name of this worker in logs and in scoring_tiles.done_by (``mfr up`` sets it).
    worker_name: str = Field("", validation_alias=AliasChoices("MFR_WORKER_NAME"))

    @field_validator("floors")
    @classmethod
    def _known_floor_fields(cls, floors: dict[str, int]) -> dict[str, int]:
        try:
            FloorSettings(**floors)  # unknown names stop start-up, not the first job
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        return floors

    def floor_settings(self) -> FloorSettings:
        return FloorSettings(**self.floors)

    def blas_threads(self) -> int:
        return self.threads or usable_cpus()

    def cache_root(self) -> Path:
        from mfr.settings import CacheSettings

        return Path(CacheSettings().cache_dir) / "scorer"
