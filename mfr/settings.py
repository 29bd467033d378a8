"""Typed settings from the environment (prefix ``MFR_``): one object per process.

Each process composes the pieces it needs into one class (``RankerSettings``
in ``services/ranker/config.py`` is ``ServiceSettings + DatabaseSettings +
ChallengeSettings + AdminSettings``), builds it once in ``main()`` and passes
it, or parts of it, down; nothing below ``main()`` reads the environment.
Each field's docstring is its meaning: ``mfr config [PROCESS]`` lists every
variable with its default (docs/configuration.md is its output).
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
    """The base of every settings class. A field's docstring is its meaning: ``mfr config``
    and docs/configuration.md show it (pydantic's ``use_attribute_docstrings``)."""

    # An empty variable is an unset one (MFR_CHALLENGE= is not the current directory).
    model_config = SettingsConfigDict(env_prefix="MFR_", extra="ignore", env_ignore_empty=True,
                                      use_attribute_docstrings=True)


class LogSettings(Env):
    log_format: str = "json"
    """``json`` (one object a line, for services) or ``console`` (for people)."""
    log_level: str = "INFO"
    """Python logging level: DEBUG, INFO, WARNING or ERROR."""


class ProcessSettings(LogSettings):
    """Where a process listens and how it shuts down (the gateway: HTTP only)."""

    host: str = "127.0.0.1"
    """Address the process's servers bind to (``0.0.0.0`` in a pod)."""
    shutdown_grace_s: float = 30.0
    """After SIGTERM, how long work in flight may finish before the process exits."""


class ServiceSettings(ProcessSettings):
    """A process with a gRPC port (health, and the service's API) and Prometheus metrics."""

    grpc_port: int = 0
    """gRPC port: health, reflection and the service's API (0: any free port)."""
    metrics_port: int = 0
    """Prometheus metrics HTTP port (0: no metrics server)."""
    max_workers: int = 8
    """gRPC server threads: calls served at once."""


class StorageSettings(Env):
    """Object storage: any S3 service (SeaweedFS on one machine and in the dev k8s overlay)."""

    s3_endpoint: str
    """``host:port`` of the S3 service (no scheme)."""
    s3_access_key: SecretStr
    """S3 access key."""
    s3_secret_key: SecretStr
    """S3 secret key."""
    s3_secure: bool = False
    """Talk HTTPS to the S3 service."""
    s3_region: str = "us-east-1"
    """S3 region of the buckets."""
    bucket_prefix: str = "mfr-"
    """Prefix of the four bucket names: ``models``, ``testsets``, ``features``, ``results``."""


class DatabaseSettings(Env):
    """PostgreSQL, through a connection pool."""

    database_url: SecretStr
    """PostgreSQL URL or conninfo (psycopg 3), password included."""
    db_pool_min: int = 1
    """Connections the pool keeps open."""
    db_pool_max: int = 8
    """Connections the pool opens at most."""
    db_pool_timeout_s: float = Field(30.0, gt=0)
    """Longest wait for a pooled connection (a request's wait while PostgreSQL is away)."""


class PeerSettings(Env):
    """Addresses of the services the dispatcher calls (nothing calls the ranker: it serves
    external tools)."""

    validator_addr: str = f"127.0.0.1:{GRPC_PORTS['validator']}"
    """``host:port`` of the validator."""
    embedder_addr: str = f"127.0.0.1:{GRPC_PORTS['embedder']}"
    """``host:port`` of the embedder API."""
    scorer_addr: str = f"127.0.0.1:{GRPC_PORTS['scorer']}"
    """``host:port`` of the scorer API."""


class CacheSettings(Env):
    cache_dir: Path = Path.home() / ".cache" / "mfr"
    """Per-machine cache: fetched test sets and models, the validator's latency reference."""


class ConfinementSettings(Env):
    """Processes that run participants' models (mfr/sandbox). ``MFR_ALLOW_UNCONFINED_MODELS=1``
    runs them even where their seccomp filter cannot be installed: logged at start and
    reported by the ``model-confinement`` health check. Off: such a process refuses models."""

    allow_unconfined_models: bool = False
    """Run participants' models even where their seccomp filter cannot be installed."""


class WorkerSettings(CacheSettings):
    """A queue worker: its name in logs and in the tables' ``done_by`` (``mfr up`` sets it),
    and its share of the cache directory."""

    worker_name: str = ""
    """The worker's name in logs and ``done_by`` (empty: host and pid)."""

    def worker_id(self) -> str:
        """The name, or host and pid where none was given (two workers never share one)."""
        return self.worker_name or f"{socket.gethostname()}-{os.getpid()}"

    def work_root(self, kind: str) -> Path:
        return Path(self.cache_dir) / kind


class ChallengeSettings(Env):
    """The challenge a stack serves: ``MFR_CHALLENGE``, a TOML path; the built-in one when unset."""

    challenge: Path | None = None
    """Challenge TOML file, or a built-in challenge's name (unset: the built-in ICCV21-MFR)."""


class TestSetSettings(Env):
    """The test set a stack serves, by id (``MFR_TESTSET_ID``) or as a local folder
    (``MFR_TESTSET``, set by ``mfr up``, which also uploads it)."""

    __test__ = False  # not a pytest class, despite the name

    testset: Path | None = None
    """A local test-set folder (set by ``mfr up``)."""
    testset_id: str = ""
    """Id of the served test set in the test-set bucket (empty: the id of ``MFR_TESTSET``)."""

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
    """The organisers' token (16 characters at least)."""


class ServiceTokenSettings(Env):
    """The platform's service token: every process that opens a gRPC port refuses calls
    without it (health and reflection aside), and every caller of another service sends
    it. No default, and not short: without it no internal call could succeed."""

    service_token: SecretStr = Field(min_length=16)
    """The service token of internal gRPC calls (16 characters at least)."""


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
