"""The coordinator's steps, run by whichever worker takes the task: plan and merge.

Plan (task ``scorer.plan``, once per job): read the challenge, the test set's
manifest, its protocol files and the features; check them (a bad input fails
the job with a stable code, without retries); make round 1's plan; score the
protocols the plan does not cover (``pairs``, ``templates``, ``identification``:
listed pairs and one 1:N search, cheap next to the tiles) and store their scores;
store the plan; record the round and its tiles and enqueue one task per tile,
all in one transaction.

Merge (task ``scorer.merge``, once per round, enqueued by the worker that
completed the round's last tile): read every partial, merge exactly; record
the protocols proven; then either plan the next round (the engine's retry,
for protocols whose floor was not low enough) or join the listed protocols'
scores, write the result JSON and finish the job. Both steps are idempotent: a step run twice (a worker lost
after committing) finds its work recorded and does nothing.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from threading import Event

from mfr.challenge import Challenge
from mfr.errors import InvalidInput, NotFound
from mfr.jobs import ACTIVE, end_job
from mfr.logs import get_logger
from mfr.ranking.scores import exact_ranking, fraction_text
from mfr.taskqueue import GiveUp
from services.scorer.engine import (
    PLANNED_KINDS,
    Embeddings,
    ImageLabels,
    ScoringPlan,
    TilePartial,
    make_plan,
    merge,
    score_listed,
)
from services.scorer.inputs import job_challenge, partial_key, result_key
from services.scorer.queue import MERGE, PLAN, TILE
from services.scorer.scores import in_challenge_order, score_entry
from services.scorer.worker.context import WorkerContext

log = get_logger("services.scorer.worker.coordinator")

# Input errors are the submission's fault: retrying cannot help.
PERMANENT = (InvalidInput, NotFound)
FAILURE_CODES = {PLAN: "plan_failed", TILE: "tile_failed", MERGE: "merge_failed"}


class Coordinator:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    # --- plan ---------------------------------------------------------------------
    def plan_job(self, abandoned: Event, job_id: str) -> None:
        job = self.ctx.book.job(job_id)
        if job["state"] not in ACTIVE or job["round"] > 0:
            return  # cancelled, or planned by an earlier run of this task
        self.ctx.book.set_stage(job_id, "planning")
        try:
            challenge = job_challenge(job)
            labels, files = self.ctx.inputs.labels_and_files(job["testset_id"], challenge)
            emb = self.ctx.inputs.embeddings(job, labels.count)
            plan = make_plan(emb, labels, challenge.protocols, self.ctx.backend,
                             tile_size=self.ctx.settings.scorer_tile_size,
                             floor_settings=self.ctx.settings.floor_settings())
            listed = self._score_listed(job_id, challenge, emb, labels, files)
        except PERMANENT as exc:
            self.stop_job(job_id, "failed", exc.code, exc.message)
            raise GiveUp(exc.message) from exc
        if abandoned.is_set():
            return
        if listed is not None:
            self.ctx.inputs.store_listed(job_id, listed)
        key = self.ctx.inputs.store_plan(job_id, plan)
        with self.ctx.pool.connection() as conn, conn.transaction():
            job = self.ctx.book.job(job_id, conn, for_update=True)
            if job["state"] not in ACTIVE or job["round"] > 0:
                return
            self._enqueue_round(conn, job_id, plan, key)
        log.info("job planned", job_id=job_id, tiles=len(plan.tiles), images=plan.count,
                 protocols=list(plan.protocols), listed=list(listed or ()))

    def _score_listed(self, job_id: str, challenge: Challenge, emb: Embeddings,
                      labels: ImageLabels, files: dict) -> dict[str, dict] | None:
        """Scores of the protocols the tiles do not cover, once per job, on this worker's
        backend (exact, so any worker's are the same bits); None when there are none."""
        listed = [p for p in challenge.protocols if p.kind not in PLANNED_KINDS]
        if not listed:
            return None
        self.ctx.book.set_stage(job_id, "listed")
        results = score_listed(emb, labels, listed, files, self.ctx.backend)
        return {p.id: score_entry(results[p.id]) for p in listed}

    def _enqueue_round(self, conn, job_id: str, plan: ScoringPlan, key: str) -> None:
        tiles = [(tile.key, plan.tile_pairs(tile), partial_key(job_id, plan.round, i))
                 for i, tile in enumerate(plan.tiles)]
        self.ctx.book.add_round(conn, job_id, plan.round, key, plan.digest, tiles)
        self.ctx.book.set_tile_tasks(conn, job_id, plan.round,
                                 self.ctx.deferrer.tiles(conn, job_id, plan.round, len(tiles)))
        if not tiles:  # nothing to score (cannot happen for a scorable plan): merge at once
            self.ctx.book.set_merge_task(conn, job_id, plan.round,
                                     self.ctx.deferrer.merge(conn, job_id, plan.round))

    # --- merge --------------------------------------------------------------------
    def merge_round(self, abandoned: Event, job_id: str, round: int) -> None:
        job = self.ctx.book.job(job_id)
        done = self.ctx.book.round(job_id, round)
        if job["state"] not in ACTIVE or done["merged_at"] is not None:
            return
        if done["tiles_done"] != done["tiles_total"]:
            raise RuntimeError(f"round {round} of job {job_id} merged with "
                               f"{done['tiles_done']}/{done['tiles_total']} tiles done")
        self.ctx.book.set_stage(job_id, "merging")
        plan = self.ctx.inputs.plan(done["plan_key"])
        keys = self.ctx.book.partial_keys(job_id, round)
        bucket = self.ctx.store.buckets.results
        with ThreadPoolExecutor(max_workers=8) as fetchers:
            partials = list(fetchers.map(
                lambda key: TilePartial.from_bytes(self.ctx.store.get_bytes(bucket, key)), keys))
        outcome = merge(plan, partials)
        del partials
        proven = {pid: score_entry(r) for pid, r in outcome.results.items()}
        if abandoned.is_set():
            return
        if outcome.retry is not None:
            key = self.ctx.inputs.store_plan(job_id, outcome.retry)
            with self.ctx.pool.connection() as conn, conn.transaction():
                if not self._claim_merge(conn, job_id, round, proven):
                    return
                self._enqueue_round(conn, job_id, outcome.retry, key)
            log.info("round needs another", job_id=job_id, round=round,
                     proven=list(proven), retry=[p for p in outcome.retry.protocols
                                                 if outcome.retry.protocols[p].searched])
            return
        challenge = job_challenge(job)
        listed = (self.ctx.inputs.listed(job_id)
                  if any(p.kind not in PLANNED_KINDS for p in challenge.protocols) else {})
        with self.ctx.pool.connection() as conn:
            earlier = self.ctx.book.proven_results(conn, job_id)  # the rounds before this one
        ordered = in_challenge_order(challenge, earlier, proven, listed)
        ranking = exact_ranking(challenge, ordered)
        # Written before the job's row is locked, so no S3 call runs under a row lock. The
        # document depends on the job alone (no worker's name, each score's keys sorted, as
        # jsonb would reorder them): a second merger of this round, which then loses the
        # claim below, writes the very same bytes.
        data = json.dumps(self._result_document(job, ordered, ranking, round),
                          indent=1).encode()
        stored = self.ctx.store.put_bytes(bucket, result_key(job_id), data)
        ref = {"bucket": stored.bucket, "key": stored.key, "sha256": stored.sha256,
               "size": stored.size}
        exact = (float(ranking), fraction_text(ranking)) if ranking is not None else None
        with self.ctx.pool.connection() as conn, conn.transaction():
            if not self._claim_merge(conn, job_id, round, proven):
                return
            self.ctx.book.finish(conn, job_id, ordered, exact, ref)
        log.info("job done", job_id=job_id, rounds=round,
                 ranking_score=None if ranking is None else float(ranking))
        if not self.ctx.settings.scorer_keep_partials:
            self._delete_partials(job_id, round)

    def _delete_partials(self, job_id: str, rounds: int) -> None:
        """Partials are scratch once the result is written (plans and the result stay)."""
        bucket = self.ctx.store.buckets.results
        keys = [key for r in range(1, rounds + 1) for key in self.ctx.book.partial_keys(job_id, r)]
        try:
            with ThreadPoolExecutor(max_workers=8) as deleters:
                list(deleters.map(lambda key: self.ctx.store.delete(bucket, key), keys))
        except Exception as exc:  # noqa: BLE001 - the job is done; leftovers are only space
            log.warning("partials not deleted", job_id=job_id, error=str(exc))

    def _claim_merge(self, conn, job_id: str, round_number: int, proven: dict) -> bool:
        job = self.ctx.book.job(job_id, conn, for_update=True)
        if job["state"] not in ACTIVE:
            return False
        return self.ctx.book.save_round_results(conn, job_id, round_number, proven)

    def _result_document(self, job: dict, results: dict, ranking: Fraction | None,
                         rounds: int) -> dict:
        totals = self.ctx.book.totals(job["id"])
        document = {"job_id": job["id"], "testset_id": job["testset_id"],
                    "protocols": {pid: _sorted_keys(r) for pid, r in results.items()},
                    "rounds": rounds, "tiles": totals["tiles"],
                    "pairs": totals["pairs"]}
        if ranking is not None:
            document["ranking_score"] = float(ranking)
            document["ranking_exact"] = fraction_text(ranking)
        return document

    # --- failures -------------------------------------------------------------------
    def on_failure(self, task_name: str, task: dict, reason: str) -> bool:
        """Count a failure of a task (an exception, or its worker lost); fail the job
        once the count reaches the attempts allowed. True when the job was failed."""
        job_id = task["job_id"]
        if task_name == TILE:
            failures = self.ctx.book.record_tile_failure(job_id, task["round"], task["ordinal"],
                                                     reason)
            tile = self.ctx.book.tile(job_id, task["round"], task["ordinal"]).tile_key
            what = f"tile {tile} (round {task['round']})"
        else:
            failures = self.ctx.book.record_step_failure(job_id, reason)
            what = "planning" if task_name == PLAN else f"merging round {task['round']}"
        if failures < self.ctx.settings.scorer_attempts:
            return False
        self.stop_job(job_id, "failed", FAILURE_CODES[task_name],
                      f"{what} failed {failures} times; last error: {reason}")
        return True

    def stop_job(self, job_id: str, state: str, code: str = "", message: str = "") -> bool:
        """Fail or cancel an active job and drop its waiting tasks; False if it had ended."""
        return end_job(self.ctx.pool, self.ctx.book, self.ctx.deferrer, job_id, state, code,
                       message)


def _sorted_keys(value):
    """The same JSON value with every object's keys sorted (lists keep their order)."""
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value
