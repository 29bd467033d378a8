"""The stages a submission goes through: validate, embed, score and record the result.

Each stage starts from what PostgreSQL says (so a dispatcher that took over
from a crashed one resumes where it stopped) and ends with one guarded state
change (:mod:`mfr.records.leases`). Peers are called through the typed clients
of :mod:`mfr.rpc.peers`; their failures arrive as ``RemoteError`` for the
dispatcher to sort into transient (retry with back-off) and permanent
(failed, with a reason the participant can read), or as :class:`Permanent`
for a failure found here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mfr.challenge import Challenge
from mfr.errors import InvalidInput
from mfr.faults import is_model_fault
from mfr.jobs import ENDED
from mfr.logs import get_logger
from mfr.records import results
from mfr.records.leases import Claim, LeaseLost, Leases
from mfr.rpc.calls import CallCancelled, Inflight, RemoteError
from mfr.rpc.peers import Peers
from mfr.storage import ObjectRef, ObjectStore, StoredObject

log = get_logger("services.dispatcher")
PROGRESS_EVERY_S = 1.0


class Permanent(Exception):
    """A failure that retrying will not fix; ``code`` is stable, the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PlatformFault(Permanent):
    """A job failed on our side (:mod:`mfr.faults`): worth a new job, at no cost to anyone."""


def job_failure(code: str, message: str) -> Permanent:
    """The exception for an embedding or scoring job that ended ``failed`` with ``code``."""
    return Permanent(code, message) if is_model_fault(code) else PlatformFault(code, message)


@dataclass
class StageContext:
    """What the stages need besides the claim."""

    leases: Leases
    store: ObjectStore
    peers: Peers
    challenge: Challenge  # checks a result's scores and weighs its ranking
    challenge_toml: str  # the same challenge as its services receive it
    testset_id: str
    validate_timeout_s: float = 1800.0


class Stages:
    def __init__(self, context: StageContext) -> None:
        self.context = context

    def drive(self, claim: Claim) -> None:
        """Run the remaining stages; returns when the submission reached a final state."""
        inflight = Inflight()
        claim.on_let_go.append(inflight.cancel_all)
        steps = {"queued": self.start, "validating": self.validate, "embedding": self.embed,
                 "scoring": self.score}
        try:
            while claim.state in steps and not claim.lost.is_set():
                steps[claim.state](claim, inflight)
        except CallCancelled:
            raise LeaseLost(claim.id) from None
        if claim.lost.is_set():
            raise LeaseLost(claim.id)

    def start(self, claim: Claim, _inflight: Inflight) -> None:
        self.context.leases.advance(claim, "validating")

    def validate(self, claim: Claim, inflight: Inflight) -> None:
        row, ctx = claim.row, self.context
        upload = StoredObject(row["upload_bucket"], row["upload_key"], row["upload_size"],
                              row["upload_sha256"])
        extracted = ObjectRef(ctx.store.buckets.models,
                              f"models/{claim.id}/run-{claim.run}/model.onnx")
        verdict = ctx.peers.validator.validate(upload, row["track_id"], ctx.challenge_toml,
                                               extracted, timeout=ctx.validate_timeout_s,
                                               inflight=inflight)
        if not verdict.ok:
            code, message = verdict.errors[0] if verdict.errors else (
                "rejected", "the validator rejected the model")
            ctx.leases.advance(
                claim, "rejected", {"errors": [c for c, _ in verdict.errors]},
                validation=verdict.report, error_code=code, error=message,
                model_size_mb=verdict.model_size_mb or None,
                latency_ms=verdict.latency_ms or None)
            return
        ctx.leases.advance(
            claim, "embedding", {"feature_dim": verdict.feature_dim},
            validation=verdict.report, model_key=verdict.model_key,
            model_sha256=verdict.model_sha256, model_size_mb=verdict.model_size_mb,
            latency_ms=verdict.latency_ms)

    def embed(self, claim: Claim, inflight: Inflight) -> None:
        row, ctx = claim.row, self.context
        report = row["validation"] or {}
        model = ObjectRef(ctx.store.buckets.models, row["model_key"],
                          row.get("model_sha256") or report.get("model_sha256", ""))
        target = ObjectRef(ctx.store.buckets.features, f"features/{claim.job_id}.npy")
        embedder = ctx.peers.embedder
        embedder.submit(claim.job_id, model, ctx.testset_id,
                        float(report.get("input_mean", 127.5)),
                        float(report.get("input_std", 127.5)), target, ctx.challenge_toml,
                        row.get("latency_ms") or 0.0, row.get("participant_id", ""),
                        inflight=inflight)
        job = self._follow(claim, inflight, embedder)
        if job.state == "failed":
            raise job_failure(job.error_code or "embedding_failed",
                              f"embedding failed: {job.error or 'no reason given'}")
        if job.state == "cancelled" or job.features is None:
            raise PlatformFault("embedding_cancelled", "the embedding job was cancelled")
        ctx.leases.advance(claim, "scoring", {"feature_dim": job.feature_dim,
                                              "non_finite_rows": job.non_finite_rows,
                                              "runtime": job.runtime},
                           features_key=job.features.key, embedding=job.runtime)

    def score(self, claim: Claim, inflight: Inflight) -> None:
        ctx = self.context
        features = ObjectRef(ctx.store.buckets.features, claim.row["features_key"])
        ctx.peers.scorer.submit(claim.job_id, ctx.testset_id, ctx.challenge_toml, features,
                                inflight=inflight)
        job = self._follow(claim, inflight, ctx.peers.scorer)
        if job.state == "failed":
            raise job_failure(job.error_code or "scoring_failed",
                              f"scoring failed: {job.error or 'no reason given'}")
        if job.state == "cancelled":
            raise PlatformFault("scoring_cancelled", "the scoring job was cancelled")
        done = {"result_key": job.result.key} if job.result is not None else {}
        try:
            ranking = results.record(ctx.leases, claim, ctx.challenge, job.stored_scores(), **done)
        except InvalidInput as err:  # our own scorer's answer does not fit: not the model's fault
            raise PlatformFault(err.code, f"the scores could not be recorded: {err.message}") \
                from None
        log.info("scored", submission=claim.id, run=claim.run,
                 ranking_score=None if ranking is None else float(ranking))

    def _follow(self, claim: Claim, inflight: Inflight, peer):
        """Watch the peer's job (embedding or scoring) until it ends, noting progress."""
        last_note = 0.0
        while True:
            try:
                for job in peer.watch(claim.job_id, inflight=inflight):
                    if job.state in ENDED:
                        return job
                    if time.monotonic() - last_note >= PROGRESS_EVERY_S:
                        last_note = time.monotonic()
                        self.context.leases.note(claim, progress=job.progress)  # LeaseLost
                if claim.lost.is_set():
                    raise LeaseLost(claim.id)
                job = peer.get(claim.job_id, inflight=inflight)
            except (CallCancelled, LeaseLost):
                # Whichever noticed first (the heartbeat cutting the call, or a progress note
                # finding the claim gone), the job is withdrawn if the submission let go of it.
                self._withdraw(claim, peer)
                raise
            if job.state in ENDED:
                return job
            time.sleep(1.0)  # the stream ended early (a restart of the peer): watch again

    def _withdraw(self, claim: Claim, peer) -> None:
        """Cancel the peer's job when the submission no longer wants it (cancelled by the
        organisers, or re-run). A job given up because this dispatcher stops keeps running:
        whoever takes the submission over re-attaches to it (same job id)."""
        now = self.context.leases.current(claim.id)
        if now is not None and now["state"] != "cancelled" and now["run"] == claim.run:
            return
        try:
            peer.cancel(claim.job_id)
        except RemoteError as err:
            log.warning("cancelling a withdrawn job failed", job_id=claim.job_id, code=err.code)
