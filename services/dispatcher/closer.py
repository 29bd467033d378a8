"""The window's close as a scheduled task: each board frozen once it is final.

Reads never write (:mod:`mfr.records.boards`), so the close needs a writer of its own;
it runs in the dispatcher, the background process that ends the in-time submissions the
freeze waits for, so it adds no deployable. Each ``tick_s`` after ``closes`` (nothing
before): two small queries, a board built only when final; idempotent, harmless in every
replica (ON CONFLICT DO NOTHING);
a failed tick (PostgreSQL away) is logged and retried at the next.
"""

from __future__ import annotations

import threading

from mfr.logs import get_logger
from mfr.records.boards import Leaderboards

log = get_logger("services.dispatcher.closer")


class Closer:
    """A background part of the dispatcher process: one thread, one tick every ``tick_s``."""

    def __init__(self, boards: Leaderboards, tick_s: float = 10.0) -> None:
        self.boards = boards
        self.tick_s = tick_s
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="closer", daemon=True)

    def tick(self) -> list[str]:
        """Freeze the tracks that are final now; the tracks frozen by this call."""
        frozen = self.boards.freeze_final()
        for track_id in frozen:
            log.info("board frozen at the close", challenge=self.boards.challenge.id,
                     track=track_id)
        return frozen

    def start(self) -> None:
        self.thread.start()

    def stop(self, grace: float = 10.0) -> None:
        self.stopping.set()
        self.thread.join(grace)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - PostgreSQL away: the next tick retries
                log.warning("freezing at the close failed", error=str(exc))
            self.stopping.wait(self.tick_s)
