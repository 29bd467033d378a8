"""The gateway's settings (environment, prefix ``MFR_``): one object, built in ``main()``."""

from __future__ import annotations

from pathlib import Path

from mfr.clock import Clock, FileClock, system_clock
from mfr.settings import (
    GATEWAY_PORT,
    AdminSettings,
    ChallengeSettings,
    DatabaseSettings,
    ServiceSettings,
    StorageSettings,
)


class GatewaySettings(ServiceSettings, DatabaseSettings, StorageSettings, ChallengeSettings,
                      AdminSettings):
    """HTTP on ``MFR_GATEWAY_PORT`` (``/healthz`` and ``/metrics`` on the same port)."""

    gateway_port: int = GATEWAY_PORT
    #: A participant's request answers 503 ``unavailable`` after this long without
    #: PostgreSQL, rather than hanging for the services' 30 s.
    db_pool_timeout_s: float = 5.0
    #: Tests move "now" through this file, only when MFR_ALLOW_FAKE_CLOCK=1 too (mfr/clock.py).
    fake_clock_file: Path | None = None
    allow_fake_clock: bool = False

    def clock(self) -> Clock:
        if self.fake_clock_file and self.allow_fake_clock:
            return FileClock(self.fake_clock_file)
        return system_clock
