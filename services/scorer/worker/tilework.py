"""One tile of a round, as a worker does it (task ``scorer.tile``).

The partial result is written to its deterministic key first; the tile is
done only when the UPDATE that marks it done commits, and the worker whose
UPDATE completes the round enqueues the merge in that same transaction. A
worker killed anywhere in between leaves the tile not done: its task is
handed back when the worker's heartbeat lapses, and the next worker writes
the same key again. A tile finished twice (a worker thought lost was only
slow) overwrites an equivalent partial and does not count again.
"""

from __future__ import annotations

import time
from threading import Event

from mfr.jobs import ACTIVE, InjectedFault
from mfr.logs import get_logger
from services.scorer.engine import score_tile
from services.scorer.worker.context import WorkerContext

log = get_logger("services.scorer.worker.tilework")


class TileWork:
    def __init__(self, ctx: WorkerContext, worker: str) -> None:
        self.ctx = ctx
        self.worker = worker

    def score(self, abandoned: Event, job_id: str, round: int, ordinal: int) -> str:
        """Score the tile and record it; returns what happened (for logs and tests)."""
        started = time.perf_counter()
        job = self.ctx.book.job(job_id)
        if job["state"] not in ACTIVE:
            return "job ended"
        tile_row = self.ctx.book.tile(job_id, round, ordinal)
        if tile_row.done:
            return "already done"
        if job["state"] == "queued":
            self.ctx.book.mark_running(job_id)
        self._injected_faults(abandoned, tile_row.tile_key)
        if abandoned.is_set():
            return "abandoned"
        plan = self.ctx.inputs.plan(tile_row.plan_key)
        tile = plan.tiles[ordinal]
        if tile.key != tile_row.tile_key:
            raise RuntimeError(f"tile {ordinal} of round {round} is {tile_row.tile_key} in the "
                               f"database but {tile.key} in the plan")
        emb = self.ctx.inputs.embeddings(job, plan.count)
        computing = time.perf_counter()
        partial = score_tile(plan, emb, tile, self.ctx.backend)
        compute_s = time.perf_counter() - computing
        stored = self.ctx.store.put_bytes(self.ctx.store.buckets.results, tile_row.partial_key,
                                      partial.to_bytes())
        if abandoned.is_set():
            return "abandoned"
        with self.ctx.pool.connection() as conn, conn.transaction():
            round_complete = self.ctx.book.complete_tile(conn, tile_row, self.worker, stored.sha256,
                                                     compute_s, time.perf_counter() - started)
            if round_complete:
                self.ctx.book.set_merge_task(conn, job_id, round,
                                         self.ctx.deferrer.merge(conn, job_id, round))
        if round_complete:
            log.info("round complete", job_id=job_id, round=round)
        return "round complete" if round_complete else "done"

    def _injected_faults(self, abandoned: Event, tile_key: str) -> None:
        if self.ctx.settings.scorer_fault_tile_delay_s > 0:
            abandoned.wait(self.ctx.settings.scorer_fault_tile_delay_s)
        if self.ctx.settings.scorer_fault_fail_tile in ("*", tile_key):
            raise InjectedFault(f"injected failure of tile {tile_key}")
