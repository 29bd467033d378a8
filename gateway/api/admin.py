"""``/v1/admin``: the organisers' calls (bearer MFR_ADMIN_TOKEN)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, PlainTextResponse

from gateway import lifecycle
from gateway.api.participants import SignUp, create_participant
from gateway.auth import Ctx, organiser
from services.ranker import submissions
from mfr.ranking.board import export_csv

router = APIRouter(prefix="/v1/admin", tags=["organisers"], dependencies=[Depends(organiser)])


def _admin_json(row: dict) -> dict:
    out = submissions.to_json(row, shown=False, detail=False)
    out.pop("public", None)
    return {**out, "participant": row["participant"], "participant_id": row["participant_id"],
            "baseline": row["baseline"], "attempts": row["attempts"],
            "lease_owner": row["lease_owner"],
            "lease_until": row["lease_until"].isoformat() if row["lease_until"] else None}


@router.post("/participants", status_code=201, summary="Create a participant, e.g. a baseline")
def create(body: SignUp, ctx: Ctx, baseline: bool = True) -> JSONResponse:
    created = create_participant(ctx, body, baseline=baseline)
    return JSONResponse({**created.model_dump(), "baseline": baseline}, 201)


@router.get("/submissions", summary="The queue and history, newest first")
def queue(ctx: Ctx, state: list[str] | None = Query(None), track: str | None = None,  # noqa: B008
          limit: int = 200) -> dict:
    with ctx.pool.connection() as conn:
        rows = submissions.find(conn, None, track, state, limit)
    return {"submissions": [_admin_json(r) for r in rows]}


@router.get("/submissions/{submission_id}", summary="Any submission, with its history")
def one(submission_id: str, ctx: Ctx) -> dict:
    with ctx.pool.connection() as conn:
        row = submissions.get(conn, submission_id)
        history = submissions.events(conn, row["id"])
    return {**_admin_json(row), **submissions.to_json(row, False, detail=True), "events": history}


@router.post("/submissions/{submission_id}/rerun", status_code=202, summary="Evaluate again")
def rerun(submission_id: str, ctx: Ctx) -> dict:
    return _admin_json(lifecycle.rerun(ctx.pool, submission_id))


@router.post("/submissions/{submission_id}/cancel", summary="Stop a pending submission")
def cancel(submission_id: str, ctx: Ctx) -> dict:
    return _admin_json(lifecycle.cancel(ctx.pool, submission_id))


@router.post("/leaderboard/{track}/freeze", summary="Record the final board of a track")
def freeze(track: str, ctx: Ctx) -> dict:
    return ctx.boards.freeze(track).to_json(ctx.challenge, reveal=True)


@router.delete("/leaderboard/{track}/freeze", summary="Drop the recorded final board")
def unfreeze(track: str, ctx: Ctx) -> dict:
    ctx.challenge.track(track)
    return {"track": track, "unfrozen": ctx.boards.unfreeze(track)}


@router.get("/leaderboard/{track}/export", response_model=None,
            summary="The board with hidden organisations, as CSV or JSON")
def export(track: str, ctx: Ctx,
           format: str = Query("csv", pattern="^(csv|json)$")) -> dict | PlainTextResponse:
    board = ctx.boards.board(track)
    if format == "json":
        return board.to_json(ctx.challenge, reveal=True)
    return PlainTextResponse(export_csv(board, ctx.challenge, reveal=True), media_type="text/csv")
