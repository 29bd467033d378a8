"""The embedder's settings (environment, prefix ``MFR_``): the API and its workers."""

from __future__ import annotations

from pydantic import Field, PositiveFloat, PositiveInt

from mfr.cpus import physical_cores
from mfr.settings import (
    GRPC_PORTS,
    METRICS_PORTS,
    CacheSettings,
    ConfinementSettings,
    DatabaseSettings,
    ServiceSettings,
    ServiceTokenSettings,
    StorageSettings,
    TestSetSettings,
    WorkerSettings,
)

MIB = 1024 * 1024


class EmbedderSettings(ServiceSettings, ServiceTokenSettings, DatabaseSettings, StorageSettings,
                       TestSetSettings, CacheSettings):
    """The embedder API: records jobs and queues their shards. ``MFR_TESTSET`` is a local
    test set it publishes at start-up (``mfr up``)."""

    grpc_port: int = GRPC_PORTS["embedder"]
    metrics_port: int = METRICS_PORTS["embedder"]
    embedder_deadline_factor: PositiveFloat = 20.0
    """A shard may take max(floor, factor x validated latency x images) seconds: the factor."""
    embedder_deadline_floor_s: PositiveFloat = 600.0
    """The floor of a shard's deadline, in seconds."""
    embedder_watch_poll_s: PositiveFloat = 0.5
    """WatchJob's polling period of PostgreSQL."""


class EmbedderWorkerSettings(ServiceSettings, ServiceTokenSettings, DatabaseSettings, StorageSettings,
                             WorkerSettings, ConfinementSettings):
    """An embedder worker: drains the shard queues of the runtimes it can run."""

    grpc_port: int = GRPC_PORTS["embedder-worker"]
    metrics_port: int = METRICS_PORTS["embedder-worker"]
    embedder_runtimes: str = "auto"
    """Runtimes whose queues this worker drains, comma-separated; "auto": what it can run."""
    embedder_threads: int = Field(0, ge=0)
    """CPU threads of the model's runtime; 0: the physical cores this process may use."""
    embedder_cached_models: PositiveInt = 2
    """Models kept loaded (one child process each), least recently used dropped first."""
    embedder_memory_mb: PositiveInt = 8192
    """The model's process: address-space limit, in MiB (CPU runtimes)."""
    embedder_file_mb: PositiveInt = 4096
    """The model's process: file-size limit, in MiB."""
    embedder_attempts: PositiveInt = 3
    """A shard failing this many times (not the model's fault) fails its job (shard_failed)."""
    embedder_retry_wait_s: int = Field(1, ge=0)
    """Seconds before a failed shard runs again."""
    embedder_heartbeat_s: PositiveFloat = 10.0
    """Worker heartbeat period."""
    embedder_stalled_s: PositiveFloat = 30.0
    """Heartbeat silence after which a worker's task is handed back."""
    embedder_reap_every_s: PositiveFloat = 10.0
    """How often each worker looks for tasks of stalled workers."""
    embedder_poll_s: PositiveFloat = 5.0
    """Queue polling when no notification arrives (LISTEN/NOTIFY wakes workers at once)."""
    embedder_fault_shard_delay_s: float = Field(0.0, ge=0)
    """Test-only fault injection: wait this long after taking a shard, before embedding it."""
    embedder_fault_fail_shard: str = ""
    """Test-only fault injection: raise in the step of the shard with this index (``*``: every
    shard)."""

    def threads(self) -> int:
        return self.embedder_threads or physical_cores()


