"""``/v1/submissions``: upload, list, read, and choose the public entry (DESIGN.md section 7)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from psycopg.types.json import Jsonb

from gateway import quota
from gateway.auth import Ctx, CurrentParticipant, MaybeParticipant, Participant
from gateway.context import Context
from gateway.errors import TooLarge
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
from mfr.errors import NotFound
from services.ranker import submissions

router = APIRouter(prefix="/v1/submissions", tags=["submissions"])


def shown_ids(ctx: Context, tracks: set[str]) -> set[str]:
    """Ids of the submissions the leaderboards show now (each participant's public entry)."""
    known = {t.id for t in ctx.challenge.tracks}
    ids: set[str] = set()
    for track in tracks & known:
        ids.update(e.submission_id for e in ctx.boards.board(track).entries)
    return ids


@router.post("", status_code=202, summary="Upload model.zip to a track",
             responses={403: {"description": "outside the submission window"},
                        413: {"description": "larger than the track allows"},
                        422: {"description": "not a zip, unsafe zip, or not exactly one .onnx"},
                        429: {"description": "daily limit reached; says when it resets"}},
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
        await run_in_threadpool(_insert, ctx, who, submission_id, track.id, form, now)
    except BaseException:
        await run_in_threadpool(discard, ctx.store, ctx.store.buckets.models, key)
        raise
    return JSONResponse({"id": submission_id, "state": "queued", "track": track.id}, 202,
                        headers={"Location": f"/v1/submissions/{submission_id}"})


def _precheck_quota(ctx: Context, who: Participant, now) -> None:
    """Refuse before a byte is uploaded when the day is used up (the insert re-checks)."""
    with ctx.pool.connection() as conn:
        quota.check(conn, ctx.challenge, who.id, now)


def _insert(ctx: Context, who: Participant, submission_id: str, track_id: str, form, now) -> None:
    stored = form.stored
    with ctx.pool.connection() as conn, conn.transaction():
        if who.baseline:
            day = quota.quota_day(ctx.challenge, now)
        else:
            day = quota.reserve(conn, ctx.challenge, who.id, now).day
        conn.execute(
            "INSERT INTO submissions (id, participant_id, challenge_id, track_id, created_at,"
            " updated_at, quota_day, upload_bucket, upload_key, upload_sha256, upload_size)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (submission_id, who.id, ctx.challenge.id, track_id, now, now, day, stored.bucket,
             stored.key, stored.sha256, stored.size))
        conn.execute("INSERT INTO submission_events (submission_id, at, state, detail)"
                     " VALUES (%s, %s, 'queued', %s)",
                     (submission_id, now, Jsonb({"filename": form.filename, "bytes": stored.size,
                                                 "sha256": stored.sha256})))


@router.get("", summary="Your submissions, newest first")
def list_own(who: CurrentParticipant, ctx: Ctx, track: str | None = None) -> dict:
    with ctx.pool.connection() as conn:
        rows = submissions.find(conn, who.id, track, limit=1000)
    shown = shown_ids(ctx, {r["track_id"] for r in rows})
    return {"submissions": [submissions.to_json(r, r["id"] in shown) for r in rows]}


@router.get("/{submission_id}", summary="One submission: yours, or an entry shown on a leaderboard")
def get_one(submission_id: str, who: MaybeParticipant,
            ctx: Ctx) -> dict:
    with ctx.pool.connection() as conn:
        row = submissions.get(conn, submission_id)
        history = submissions.events(conn, row["id"])
    shown = row["id"] in shown_ids(ctx, {row["track_id"]})
    if who is not None and row["participant_id"] == who.id:
        return {**submissions.to_json(row, shown, detail=True), "events": history}
    if not shown:
        # Another participant's private submission: indistinguishable from a missing one.
        raise NotFound(f"no submission {submission_id!r}", code="submission_not_found")
    return public_view(row)


def public_view(row: dict) -> dict:
    """What anyone may see of a leaderboard entry: scores, ROC, the model's measurements."""
    full = submissions.to_json(row, True, detail=True)
    validation = row["validation"] or {}
    keep = ("feature_dim", "model_size_mb", "latency_ms", "latency_limit_ms", "device",
            "latency_factor", "input_mean", "input_std", "ok")
    full["validation"] = {k: validation[k] for k in keep if k in validation}
    full["participant"] = row["participant"]
    full["baseline"] = row["baseline"]
    for private in ("errors", "progress", "public_chosen", "run", "updated_at"):
        full.pop(private, None)
    return full


@router.post("/{submission_id}/public", summary="Make it your public entry for its track (Set Public)")
def set_public(submission_id: str, who: CurrentParticipant,
               ctx: Ctx) -> dict:
    ctx.results.set_public(who.id, submission_id)
    with ctx.pool.connection() as conn:
        row = submissions.get(conn, submission_id, who.id)
    return submissions.to_json(row, row["id"] in shown_ids(ctx, {row["track_id"]}))
