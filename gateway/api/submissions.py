"""``/v1/submissions``: upload, list, read, and choose the public entry (DESIGN.md section 7)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from gateway import quota
from gateway.auth import Ctx, CurrentParticipant, MaybeParticipant
from gateway.context import Context
from gateway.errors import TooLarge, documented
from gateway.uploads import (
    FORM_OVERHEAD,
    MIB,
    S3Sink,
    discard,
    file_cap,
    receive_upload,
    rejected,
    zip_findings,
)
from gateway.views import public_view, submission_json
from mfr.errors import NotFound
from mfr.logs import REQUEST_ID, get_logger
from mfr.records import events, submissions
from mfr.records.participants import Participant

log = get_logger("gateway")
router = APIRouter(prefix="/v1/submissions", tags=["submissions"])
SCORES_DESCRIPTION = """`scores` has one object per protocol, with its `kind` and `rate` and the
fields of its kind (DESIGN.md 3.1):

* TAR kinds (`all`, `cross`, `pairs` with `tar`, `templates`): `tar`, `far`,
  `threshold`, `genuine`, `impostor`, `genuine_accepted`, `impostors_accepted`;
* `pairs` with `accuracy`: `accuracy`, `accuracy_std`, `fold_accuracies`,
  `thresholds` (one per fold; null: the fold rejects every pair), `pairs`;
* `identification`: `tpir`, `fnir`, `rank1`, `threshold` (null: minus infinity),
  `fpir`, `mated`, `nonmated`, `hits`, `nonmated_accepted`.

`rate_exact` gives each protocol's rate (TAR, accuracy or TPIR) as an exact
fraction `p/q`; the ranking score is the challenge's weighted sum of those rates.
"""


@router.post("", status_code=202, summary="Upload model.zip to a track",
             responses=documented(401, 403, 413, 429),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "multipart/form-data": {"schema": {
                     "type": "object", "required": ["track", "file"],
                     "properties": {"track": {"type": "string", "example": "A"},
                                    "file": {"type": "string", "format": "binary"}}}}}}})
async def create(request: Request, who: CurrentParticipant, ctx: Ctx) -> JSONResponse:
    now = ctx.clock()
    caps = {t.id: file_cap(t.max_model_bytes) for t in ctx.challenge.tracks}
    largest = max(caps.values())
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > largest + FORM_OVERHEAD:
        raise TooLarge(f"the upload ({int(declared) / MIB:.1f} MB) exceeds {largest / MIB:.1f} MB")
    if not who.baseline:
        quota.check_window(ctx.challenge, now)
        await run_in_threadpool(_precheck_quota, ctx, who, now)

    submission_id = str(uuid.uuid4())
    key = f"uploads/{who.id}/{submission_id}.zip"
    form = await receive_upload(
        request.stream(), request.headers.get("content-type", ""),
        sink_for=lambda: S3Sink(ctx.store, ctx.store.buckets.models, key),
        cap_for=lambda fields: caps.get(fields.get("track", ""), largest))
    try:
        track = ctx.challenge.track(form.fields.get("track", ""))
        if form.size > caps[track.id]:
            raise TooLarge(f"the upload exceeds {caps[track.id] / MIB:.1f} MB, the most track "
                           f"{track.id} accepts")
        findings = zip_findings(form, track.max_model_bytes)
        if findings:
            raise rejected(findings)
        # The upload's request id goes with the submission: every process after this one
        # logs it (docs/operations.md, "Following one submission").
        await run_in_threadpool(_insert, ctx, who, submission_id, track.id, form, now,
                                getattr(request.state, REQUEST_ID, None))
    except BaseException:
        await run_in_threadpool(discard, ctx.store, ctx.store.buckets.models, key)
        raise
    log.info("submission queued", submission=submission_id, track=track.id,
             participant=who.id, bytes=form.size)
    return JSONResponse({"id": submission_id, "state": "queued", "track": track.id}, 202,
                        headers={"Location": f"/v1/submissions/{submission_id}"})


def _precheck_quota(ctx: Context, who: Participant, now) -> None:
    """Refuse before a byte is uploaded when the day is used up (the insert re-checks)."""
    with ctx.pool.connection() as conn:
        quota.check(conn, ctx.challenge, who.id, now)


def _insert(ctx: Context, who: Participant, submission_id: str, track_id: str, form, now,
            request_id: str | None) -> None:
    with ctx.pool.connection() as conn, conn.transaction():
        if who.baseline:
            day = quota.quota_day(ctx.challenge, now)
        else:
            day = quota.reserve(conn, ctx.challenge, who.id, now).day
        submissions.create(conn, submission_id, who.id, ctx.challenge.id, track_id, now, day,
                           form.stored, form.filename, request_id)


@router.get("", summary="Your submissions, newest first", responses=documented(401))
def list_own(who: CurrentParticipant, ctx: Ctx, track: str | None = None) -> dict:
    with ctx.pool.connection() as conn:
        rows = submissions.find(conn, who.id, track, limit=1000)
    shown = ctx.boards.shown_ids({r["track_id"] for r in rows}, who.id)
    return {"submissions": [submission_json(r, r["id"] in shown) for r in rows]}


@router.get("/{submission_id}", summary="One submission: yours, or an entry shown on a leaderboard",
            description=SCORES_DESCRIPTION, responses=documented(401, 404))
def get_one(submission_id: str, who: MaybeParticipant,
            ctx: Ctx) -> dict:
    with ctx.pool.connection() as conn:
        row = submissions.get(conn, submission_id)
        history = events.history(conn, row["id"])
    shown = ctx.boards.is_shown(row)
    if who is not None and row["participant_id"] == who.id:
        return {**submission_json(row, shown, detail=True), "events": history}
    if not shown:
        # Another participant's private submission: indistinguishable from a missing one.
        raise NotFound(f"no submission {submission_id!r}", code="submission_not_found")
    return public_view(row)


@router.post("/{submission_id}/public", summary="Make it your public entry for its track (Set Public)",
             responses=documented(401, 404, 409))
def set_public(submission_id: str, who: CurrentParticipant,
               ctx: Ctx) -> dict:
    ctx.results.set_public(who.id, submission_id)
    with ctx.pool.connection() as conn:
        row = submissions.get(conn, submission_id, who.id)
    return submission_json(row, ctx.boards.is_shown(row))
