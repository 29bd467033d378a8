"""Public reads: the challenge, leaderboards (JSON, CSV), and the caller's quota."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from gateway import quota
from gateway.auth import Ctx, CurrentParticipant
from gateway.errors import documented
from mfr.ranking.board import export_csv

router = APIRouter(tags=["leaderboard"])


@router.get("/v1/challenge", summary="The challenge served: tracks, protocols, weights, window")
def challenge(ctx: Ctx) -> dict:
    c = ctx.challenge
    now = ctx.clock()
    is_open = (c.opens is None or now >= c.opens) and (c.closes is None or now < c.closes)
    return {
        "id": c.id, "title": c.title, "timezone": c.timezone,
        "daily_submission_limit": c.daily_submission_limit,
        "daily_rejected_limit": c.daily_rejected_limit,
        "opens": c.opens.isoformat() if c.opens else None,
        "closes": c.closes.isoformat() if c.closes else None,
        "open": is_open, "now": now.isoformat(),
        "weights": {k: float(v) for k, v in c.weights.items()},
        "tracks": [{"id": t.id, "training_set": t.training_set, "max_feature_dim": t.max_feature_dim,
                    "max_latency_ms": t.max_latency_ms, "max_model_mb": t.max_model_mb}
                   for t in c.tracks],
        "protocols": [{"id": p.id, "title": p.title, "kind": p.kind, "rate": p.rate,
                       "far": float(p.far) if p.far is not None else None,
                       **({"fpir": float(p.fpir)} if p.fpir is not None else {})}
                      for p in c.protocols],
    }


@router.get("/v1/leaderboard/{track}", summary="A track's leaderboard",
            description="Each entry's `protocols` maps a protocol id to its rate, a fraction "
                        "in [0, 1]: TAR, accuracy or TPIR, as the board's `protocols` list "
                        "says (`kind`, `rate`, `far` or `fpir` of each protocol).")
def leaderboard(track: str, ctx: Ctx) -> dict:
    return ctx.boards.board(track).to_json(ctx.challenge)


@router.get("/v1/leaderboard/{track}/export", summary="The leaderboard as CSV or JSON",
            response_model=None)
def export(track: str, ctx: Ctx,
           format: str = Query("csv", pattern="^(csv|json)$")) -> dict | PlainTextResponse:
    board = ctx.boards.board(track)
    if format == "json":
        return board.to_json(ctx.challenge)
    return PlainTextResponse(export_csv(board, ctx.challenge, reveal=False), media_type="text/csv",
                             headers={"Content-Disposition":
                                      f'attachment; filename="{ctx.challenge.id}-{track}.csv"'})


@router.get("/v1/quota", tags=["submissions"], summary="Submissions left today",
            responses=documented(401))
def remaining(who: CurrentParticipant, ctx: Ctx) -> dict:
    with ctx.pool.connection() as conn:
        q = quota.quota(conn, ctx.challenge, who.id, ctx.clock())
    body = q.to_json()
    if who.baseline:
        body["exempt"] = True
    return body
