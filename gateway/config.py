"""The gateway's settings (environment, prefix ``MFR_``): one object, built in ``main()``."""

from __future__ import annotations

from pathlib import Path

from mfr.clock import Clock, FileClock, system_clock
from mfr.settings import (
    GATEWAY_PORT,
    AdminSettings,
    ChallengeSettings,
    DatabaseSettings,
    ProcessSettings,
    StorageSettings,
)


class GatewaySettings(ProcessSettings, DatabaseSettings, StorageSettings, ChallengeSettings,
                      AdminSettings):
    """HTTP on ``MFR_GATEWAY_PORT`` (``/healthz`` and ``/metrics`` on the same port)."""

    gateway_port: int = GATEWAY_PORT
    """HTTP port of the API, the web page, ``/healthz`` and ``/metrics``."""
    db_pool_timeout_s: float = 5.0
    """A participant's request answers 503 ``unavailable`` after this long without
    PostgreSQL, rather than hanging for the services' 30 s."""
    fake_clock_file: Path | None = None
    """Test-only: "now" is read from this file, when ``MFR_ALLOW_FAKE_CLOCK`` is set too
    (mfr/clock.py)."""
    allow_fake_clock: bool = False
    """Test-only: let ``MFR_FAKE_CLOCK_FILE`` move the gateway's "now"."""

    def clock(self) -> Clock:
        if self.fake_clock_file and self.allow_fake_clock:
            return FileClock(self.fake_clock_file)
        return system_clock
