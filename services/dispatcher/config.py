"""The dispatcher's settings (environment, prefix ``MFR_``; its own knobs ``MFR_DISPATCH_*``)."""

from __future__ import annotations

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt

from mfr.settings import (
    GRPC_PORTS,
    METRICS_PORTS,
    ChallengeSettings,
    DatabaseSettings,
    Env,
    PeerSettings,
    ServiceSettings,
    ServiceTokenSettings,
    StorageSettings,
    TestSetSettings,
)


class DispatchTuning(Env):
    """How submissions are claimed and retried (what the dispatch loop reads)."""

    dispatch_workers: PositiveInt = 2
    """Submissions one dispatcher drives at once (one thread each)."""
    dispatch_lease_s: PositiveFloat = 60.0
    """A claim lapses this long after its last renewal (renewed every third of it); then
    another dispatcher takes the submission over."""
    dispatch_poll_s: PositiveFloat = 2.0
    """Polling of the queue when no notification arrives (NOTIFY wakes it at once)."""
    dispatch_max_attempts: int = Field(8, ge=1, le=1000)
    """Claims of one submission before a transient failure becomes its final one."""
    dispatch_platform_retries: int = Field(2, ge=0, le=100)
    """New jobs for a submission whose embedding or scoring job failed on our side
    (mfr/faults.py) before it ends ``failed`` (its quota slot given back)."""
    dispatch_backoff_base_s: NonNegativeFloat = 2.0
    """Base of the exponential back-off between attempts (with full jitter)."""
    dispatch_backoff_max_s: NonNegativeFloat = 300.0
    """Cap of the back-off between attempts."""
    dispatch_validate_timeout_s: PositiveFloat = 1800.0
    """Longest wait for a validation before the call is retried. (Embedding and scoring
    jobs bound their own steps: the dispatcher watches them without a deadline.)"""


class DispatcherSettings(ServiceSettings, ServiceTokenSettings, DatabaseSettings, StorageSettings,
                         PeerSettings, ChallengeSettings, TestSetSettings, DispatchTuning):
    """No organisers' token: the dispatcher records results itself, under its lease."""

    grpc_port: int = GRPC_PORTS["dispatcher"]
    metrics_port: int = METRICS_PORTS["dispatcher"]
