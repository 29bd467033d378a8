"""The ranker's settings (environment, prefix ``MFR_``)."""

from __future__ import annotations

from mfr.settings import (
    GRPC_PORTS,
    METRICS_PORTS,
    AdminSettings,
    ChallengeSettings,
    DatabaseSettings,
    ServiceSettings,
    ServiceTokenSettings,
)


class RankerSettings(ServiceSettings, ServiceTokenSettings, DatabaseSettings, ChallengeSettings,
                     AdminSettings):
    """``MFR_ADMIN_TOKEN`` is required: private reads check it."""

    grpc_port: int = GRPC_PORTS["ranker"]
    metrics_port: int = METRICS_PORTS["ranker"]
