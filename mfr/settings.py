"""Typed settings from the environment (prefix ``MFR_``): one object per process.

Each process composes the pieces it needs into one class (``RankerSettings``
in ``services/ranker/config.py`` is ``ServiceSettings + DatabaseSettings +
ChallengeSettings + AdminSettings``), builds it once in ``main()`` and passes
it, or parts of it, down; nothing below ``main()`` reads the environment.
Secrets (database URL, S3 keys, the organisers' token, the service token) have no
defaults: a process that needs one and does not get it stops at start-up with
``error[config_invalid]: MFR_X is not set``.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Default ports, also documented in docs/architecture.md.
GRPC_PORTS = {"validator": 50051, "embedder": 50052, "scorer": 50053, "ranker": 50054,
              "scorer-worker": 50055, "dispatcher": 50056, "embedder-worker": 50057}
METRICS_PORTS = {"validator": 9101, "embedder": 9102, "scorer": 9103, "ranker": 9104,
                 "scorer-worker": 9105, "dispatcher": 9106, "embedder-worker": 9107}
GATEWAY_PORT = 8000


class Env(BaseSettings):
    # An empty variable is an unset one (MFR_CHALLENGE= is not the current directory).
    model_config = SettingsConfigDict(env_prefix="MFR_", extra="ignore", env_ignore_empty=True)


class LogSettings(Env):
    log_format: str = "json"  # "json" for services, "console" for people
    log_level: str = "INFO"


class ServiceSettings(LogSettings):
    """Where a process listens (gRPC health and API, Prometheus) and how it shuts down."""

    host: str = "127.0.0.1"
    grpc_port: int = 0
    metrics_port: int = 0  # 0: no metrics HTTP server (tests)
    shutdown_grace_s: float = 30.0
    max_workers: int = 8


class StorageSettings(Env):
    """Object storage: any S3 service (SeaweedFS on one machine and in the dev k8s overlay)."""

    s3_endpoint: str
    s3_access_key: SecretStr
    s3_secret_key: SecretStr
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    bucket_prefix: str = "mfr-"


class DatabaseSettings(Env):
    database_url: SecretStr
    db_pool_min: int = 1
    db_pool_max: int = 8
    #: Longest wait for a pooled connection (a request's wait while PostgreSQL is away).
    db_pool_timeout_s: float = Field(30.0, gt=0)


class PeerSettings(Env):
    """Addresses of the other services."""

    validator_addr: str = f"127.0.0.1:{GRPC_PORTS['validator']}"
    embedder_addr: str = f"127.0.0.1:{GRPC_PORTS['embedder']}"
    scorer_addr: str = f"127.0.0.1:{GRPC_PORTS['scorer']}"
    ranker_addr: str = f"127.0.0.1:{GRPC_PORTS['ranker']}"


class CacheSettings(Env):
    cache_dir: Path = Path.home() / ".cache" / "mfr"


class ConfinementSettings(Env):
    """Processes that run participants' models (mfr/sandbox). ``MFR_ALLOW_UNCONFINED_MODELS=1``
    runs them even where their seccomp filter cannot be installed: logged at start and
    reported by the ``model-confinement`` health check. Off: such a process refuses models."""

    allow_unconfined_models: bool = False


class WorkerSettings(CacheSettings):
    """A queue worker: its name in logs and in the tables' ``done_by`` (``mfr up`` sets it),
    and its share of the cache directory."""

    worker_name: str = ""

    def worker_id(self) -> str:
        """The name, or host and pid where none was given (two workers never share one)."""
        return self.worker_name or f"{socket.gethostname()}-{os.getpid()}"

    def work_root(self, kind: str) -> Path:
        return Path(self.cache_dir) / kind


class ChallengeSettings(Env):
    """The challenge a stack serves: ``MFR_CHALLENGE``, a TOML path; the built-in one when unset."""

    challenge: Path | None = None


class TestSetSettings(Env):
    """The test set a stack serves, by id (``MFR_TESTSET_ID``) or as a local folder
    (``MFR_TESTSET``, set by ``mfr up``, which also uploads it)."""

    __test__ = False  # not a pytest class, despite the name

    testset: Path | None = None
    testset_id: str = ""

    def served_testset_id(self) -> str:
        """``MFR_TESTSET_ID``, else the id in ``$MFR_TESTSET/testset.json``, else ""."""
        if self.testset_id:
            return self.testset_id
        if self.testset:
            return json.loads((self.testset / "testset.json").read_text())["id"]
        return ""


class AdminSettings(Env):
    """The organisers' token. No default, and not short: a process that checks it does not
    start without it (else every organiser call, and every recorded result, would fail)."""

    admin_token: SecretStr = Field(min_length=16)


class ServiceTokenSettings(Env):
    """The platform's service token: every process that opens a gRPC port refuses calls
    without it (health and reflection aside), and every caller of another service sends
    it. No default, and not short: without it no internal call could succeed."""

    service_token: SecretStr = Field(min_length=16)


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
