"""``/v1/admin``: the organisers' calls (bearer MFR_ADMIN_TOKEN)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, PlainTextResponse

from gateway.api.participants import SignUp, create_participant
from gateway.auth import Ctx, organiser
from gateway.errors import documented
from gateway.views import admin_view, submission_json
from mfr.ranking.board import export_csv
from mfr.records import events, lifecycle, submissions

router = APIRouter(prefix="/v1/admin", tags=["organisers"], dependencies=[Depends(organiser)],
                   responses=documented(401, 403))


@router.post("/participants", status_code=201, summary="Create a participant, e.g. a baseline",
             responses=documented(409))
def create(body: SignUp, ctx: Ctx, baseline: bool = True) -> JSONResponse:
    created = create_participant(ctx, body, baseline=baseline)
    return JSONResponse({**created.model_dump(), "baseline": baseline}, 201)


@router.get("/submissions", summary="The queue and history, newest first")
def queue(ctx: Ctx, state: list[str] | None = Query(None), track: str | None = None,  # noqa: B008
          limit: int = 200) -> dict:
    with ctx.pool.connection() as conn:
        rows = submissions.find(conn, None, track, state, limit)
    return {"submissions": [admin_view(r) for r in rows]}


@router.get("/submissions/{submission_id}", summary="Any submission, with its history",
            responses=documented(404))
def one(submission_id: str, ctx: Ctx) -> dict:
    with ctx.pool.connection() as conn:
        row = submissions.get(conn, submission_id)
        history = events.history(conn, row["id"])
    return {**admin_view(row), **submission_json(row, False, detail=True), "events": history}


@router.post("/submissions/{submission_id}/rerun", status_code=202, summary="Evaluate again",
             responses=documented(404, 409))
def rerun(submission_id: str, ctx: Ctx) -> dict:
    return admin_view(lifecycle.rerun(ctx.pool, submission_id))


@router.post("/submissions/{submission_id}/cancel", summary="Stop a pending submission",
             responses=documented(404, 409))
def cancel(submission_id: str, ctx: Ctx) -> dict:
    return admin_view(lifecycle.cancel(ctx.pool, submission_id))


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
