"""Following a leaderboard: the board now, then again each time it changes.

Changes are announced by PostgreSQL (``NOTIFY mfr_leaderboard``, sent by the
triggers of migration 0002 whoever writes: ranker, gateway or an organiser's
SQL), so a watcher wakes at once without polling the board; a slow poll
(``poll_s``) still catches what no trigger announces, e.g. the close passing.
Watching only reads: the final board's snapshot, recorded at the close by the
dispatcher (``services/dispatcher/closer.py``), is announced like any change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from mfr.db.pool import listening
from mfr.ranking.board import Board
from mfr.records.boards import Leaderboards

CHANNEL = "mfr_leaderboard"


class BoardWatcher:
    def __init__(self, boards: Leaderboards, poll_s: float = 10.0, tick_s: float = 0.5) -> None:
        self.boards = boards
        self.poll_s = poll_s
        self.tick_s = tick_s

    def watch(self, track_id: str, active: Callable[[], bool]) -> Iterator[Board]:
        """Yield the board, then each changed board, while ``active()``."""
        key = f"{self.boards.challenge.id}/{track_id}"
        with listening(self.boards.pool, CHANNEL) as conn:
            last = None
            next_poll = 0.0
            changed = True
            while active():
                if changed or time.monotonic() >= next_poll:
                    board = self.boards.board(track_id)
                    doc = board.to_json(reveal=True)
                    doc.pop("updated_at", None)
                    if doc != last:
                        last = doc
                        yield board
                    next_poll = time.monotonic() + self.poll_s
                changed = False
                for note in conn.notifies(timeout=self.tick_s):
                    if note.payload in (key, "*"):
                        changed = True
                        break
