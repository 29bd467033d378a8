"""Typed settings from the environment (prefix ``MFR_``), one object per process.

Secrets (database URL, S3 keys, admin token) have no defaults: a process that
needs one and does not get it stops at start-up with a clear message.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Default ports, also documented in docs/architecture.md.
GRPC_PORTS = {"validator": 50051, "embedder": 50052, "scorer": 50053, "ranker": 50054,
              "scorer-worker": 50055, "dispatcher": 50056}
METRICS_PORTS = {"validator": 9101, "embedder": 9102, "scorer": 9103, "ranker": 9104,
                 "scorer-worker": 9105, "dispatcher": 9106}
GATEWAY_PORT = 8000


class _Env(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MFR_", extra="ignore")


class LogSettings(_Env):
    log_format: str = "json"  # "json" for services, "console" for people
    log_level: str = "INFO"


class ServiceSettings(LogSettings):
    """Where a gRPC service listens and how it shuts down."""

    host: str = "127.0.0.1"
    grpc_port: int = 0
    metrics_port: int = 0  # 0: no metrics HTTP server (tests)
    shutdown_grace_s: float = 30.0
    max_workers: int = 8


class StorageSettings(_Env):
    """Object storage (MinIO in k8s, SeaweedFS on one machine)."""

    s3_endpoint: str
    s3_access_key: SecretStr
    s3_secret_key: SecretStr
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    bucket_prefix: str = "mfr-"


class DatabaseSettings(_Env):
    database_url: SecretStr
    db_pool_min: int = 1
    db_pool_max: int = 8


class PeerSettings(_Env):
    """Addresses of the other services."""

    validator_addr: str = f"127.0.0.1:{GRPC_PORTS['validator']}"
    embedder_addr: str = f"127.0.0.1:{GRPC_PORTS['embedder']}"
    scorer_addr: str = f"127.0.0.1:{GRPC_PORTS['scorer']}"
    ranker_addr: str = f"127.0.0.1:{GRPC_PORTS['ranker']}"


class CacheSettings(_Env):
    cache_dir: Path = Path.home() / ".cache" / "mfr"


def config_problem(exc: Exception) -> str:
    """One line naming the environment variables a settings object could not read."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for error in exc.errors():
        variable = "MFR_" + "_".join(str(p) for p in error["loc"]).upper()
        if error["type"] == "missing":
            parts.append(f"{variable} is not set")
        else:
            parts.append(f"{variable}: {error['msg']}")
    return "; ".join(parts)
