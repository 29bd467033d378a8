"""The platform's notion of "now" (submission window, daily limit, board freezing),
injectable for tests.

Anything taking a ``Clock`` takes a callable returning an aware datetime. A
gateway *process* reads the time from the file named by ``MFR_FAKE_CLOCK_FILE``
(one ISO-8601 date-time, re-read on every call so a test can move it) — but
only when ``MFR_ALLOW_FAKE_CLOCK=1`` is set as well, so a stray variable in
production can never move the submission window or the daily limit
(``gateway/config.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class FileClock:
    """Time read from a file on each call; the system clock while the file is absent."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __call__(self) -> datetime:
        try:
            text = self.path.read_text("utf-8").strip()
        except FileNotFoundError:
            return system_clock()
        value = datetime.fromisoformat(text)
        return value if value.tzinfo else value.replace(tzinfo=UTC)
