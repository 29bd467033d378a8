"""What the HTTP API shows of a submission: to its owner, to anyone (a board entry), to organisers."""

from __future__ import annotations

from mfr.ranking.scores import FIELDS_BY_RATE, rate_name


def errors_of(row: dict) -> list[dict]:
    """Why a submission did not score: the validation codes, or the failure's reason."""
    if row["state"] == "rejected" and row["validation"]:
        return [{"code": e["code"], "message": e["message"]}
                for e in row["validation"].get("errors", [])]
    if row["error"] or row["error_code"]:
        return [{"code": row["error_code"] or "failed", "message": row["error"] or ""}]
    return []


def score_json(stored: dict) -> dict:
    """One protocol's score: its kind's fields (DESIGN.md 3.1), then ``kind`` and ``rate``.

    TAR kinds keep exactly section 7's fields (a contract) plus those two; rows stored
    before the kinds existed are TAR scores and do not know their kind.
    """
    rate = rate_name(stored)
    out = {k: stored[k] for k in FIELDS_BY_RATE[rate] if k in stored}
    if stored.get("kind"):
        out["kind"] = stored["kind"]
    out["rate"] = rate
    return out


def submission_json(row: dict, shown: bool, detail: bool = False) -> dict:
    """The HTTP API's submission (DESIGN.md section 7), for its owner or an organiser."""
    scores = dict(sorted((row["scores"] or {}).items(),
                         key=lambda item: (item[1].get("order", len(row["scores"])), item[0])))
    out = {
        "id": row["id"],
        "track": row["track_id"],
        "state": row["state"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "validation": row["validation"],
        "errors": errors_of(row),
        "scores": {pid: score_json(s) for pid, s in scores.items()},
        "ranking_score": row["ranking_score"],
        "ranking_exact": row["ranking_exact"],
        "public": shown,
        "public_chosen": row["public"],
        "model_size_mb": row["model_size_mb"],
        "latency_ms": row["latency_ms"],
        "progress": row["progress"],
        "run": row["run"],
        # What embedded the features (runtime, version, device, batch size): shown beside
        # the scores, since a challenge's board never mixes runtimes.
        "embedding": row["embedding"],
    }
    if detail:
        # The upload's X-Request-Id: the id its owner and the organisers quote, and the one
        # the platform's logs carry for it. Its owner saw it already (the upload's answer).
        out["request_id"] = row.get("request_id")
        out["roc"] = {pid: s.get("roc", []) for pid, s in scores.items()}
        out["tar_exact"] = {pid: s.get("tar_exact") for pid, s in scores.items()
                            if rate_name(s) == "tar"}
        out["rate_exact"] = {pid: s.get("rate_exact") or s.get("tar_exact")
                             for pid, s in scores.items()}
    return out


def public_view(row: dict) -> dict:
    """What anyone may see of a leaderboard entry: scores, ROC, the model's measurements."""
    full = submission_json(row, True, detail=True)
    validation = row["validation"] or {}
    keep = ("feature_dim", "model_size_mb", "latency_ms", "latency_limit_ms", "device",
            "latency_factor", "input_mean", "input_std", "ok")
    full["validation"] = {k: validation[k] for k in keep if k in validation}
    full["participant"] = row["participant"]
    full["baseline"] = row["baseline"]
    for private in ("errors", "progress", "public_chosen", "run", "updated_at", "request_id"):
        full.pop(private, None)
    return full


def admin_view(row: dict) -> dict:
    """An organiser's line of the queue: who, the dispatcher's lease and attempts."""
    out = submission_json(row, shown=False, detail=False)
    out.pop("public", None)
    return {**out, "participant": row["participant"], "participant_id": row["participant_id"],
            "baseline": row["baseline"], "attempts": row["attempts"],
            "request_id": row.get("request_id"),  # grep the logs for it (docs/operations.md)
            "lease_owner": row["lease_owner"],
            "lease_until": row["lease_until"].isoformat() if row["lease_until"] else None}
