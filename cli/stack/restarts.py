"""What ``mfr up`` does when one of its processes dies: restart it, as Kubernetes would.

Each child (a service, a worker, the dispatcher, the gateway, PostgreSQL, the S3
server) gets its own record of exits. A child that exits is started again after
an exponential back-off (0.5 s, 1 s, 2 s, ... capped at 10 s, like a pod's
CrashLoopBackOff but shorter, since a laptop stack has no scheduler to wait
for); a child that exits ``CRASH_LOOP_EXITS`` times within ``CRASH_LOOP_WINDOW_S``
is crash-looping, which a restart will not fix: the stack stops and names it.
Work in flight is not lost either way: claims and queue tasks live in
PostgreSQL and are taken over once their lease lapses.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

CRASH_LOOP_EXITS = 5
CRASH_LOOP_WINDOW_S = 60.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0


class CrashLoop(Exception):
    """A child exited too often to keep restarting it."""


@dataclass
class RestartPolicy:
    """One child's exits and when it may be started again (monotonic seconds)."""

    name: str
    exits: deque = field(default_factory=deque)
    restart_at: float | None = None
    restarts: int = 0

    def exited(self, now: float | None = None) -> float:
        """Record an exit; the back-off before the restart. CrashLoop when it loops."""
        now = time.monotonic() if now is None else now
        self.exits.append(now)
        while self.exits and now - self.exits[0] > CRASH_LOOP_WINDOW_S:
            self.exits.popleft()
        if len(self.exits) >= CRASH_LOOP_EXITS:
            raise CrashLoop(f"{self.name} exited {len(self.exits)} times within "
                            f"{CRASH_LOOP_WINDOW_S:.0f}s; not restarting it again")
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (len(self.exits) - 1))
        self.restart_at = now + delay
        return delay

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.restart_at is not None and now >= self.restart_at

    def restarted(self) -> None:
        self.restart_at = None
        self.restarts += 1
