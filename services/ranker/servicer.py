"""RankerService: protobuf <-> the ranker's core (boards, results, submissions) only.

Callers are external tools: without the organisers' token (``authorization:
Bearer TOKEN`` metadata) they see public data only, i.e. the submissions shown
on a board; another submission is NOT_FOUND, as over HTTP.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from psycopg_pool import ConnectionPool

from mfr.common.v1 import types_pb2
from mfr.errors import InvalidInput, NotFound, PermissionDenied
from mfr.ranker.v1 import ranker_pb2, ranker_pb2_grpc
from mfr.ranking.board import Board, Entry
from mfr.ranking.scores import FIELDS_BY_RATE, rate_name
from mfr.records import submissions
from mfr.records.boards import Leaderboards
from mfr.records.results import Results
from services.ranker.watch import BoardWatcher


def score_from_proto(score: types_pb2.ProtocolScore) -> dict:
    """The scorer's result for one protocol: the TAR fields for TAR kinds (and older
    senders, which name no rate); for accuracy and identification the fields of
    ``result_json`` (checked by :func:`mfr.ranking.scores.normalise_scores`)."""
    head = {"kind": score.kind, "rate": score.rate, "rate_exact": score.rate_exact}
    if (score.rate or "tar") != "tar" or score.kind == "identification":
        try:
            fields = json.loads(score.result_json or "{}")
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            raise InvalidInput(f"score of protocol {score.protocol_id!r}: result_json is not a "
                               "JSON object", code="scores_invalid")
        return {**fields, **head}
    return {
        **head,
        "tar": score.tar, "far": score.far, "threshold": score.threshold,
        "genuine": score.genuine, "impostor": score.impostor,
        "genuine_accepted": score.genuine_accepted, "impostors_accepted": score.impostors_accepted,
        "roc": [{"far": p.far, "tar": p.tar, "threshold": p.threshold, "exact": p.exact}
                for p in score.roc],
    }


def _threshold(value: float | None) -> float:
    return float("-inf") if value is None else value  # stored as null: JSON has no -inf


def score_to_proto(protocol_id: str, score: dict) -> types_pb2.ProtocolScore:
    rate = rate_name(score)
    if rate != "tar":  # TAR fields zero; the kind's fields travel as JSON
        fields = {k: score[k] for k in FIELDS_BY_RATE[rate] if k in score}
        return types_pb2.ProtocolScore(
            protocol_id=protocol_id, kind=score.get("kind", ""), rate=rate,
            rate_exact=score.get("rate_exact", ""), result_json=json.dumps(fields))
    return types_pb2.ProtocolScore(
        protocol_id=protocol_id, tar=score["tar"], far=score["far"],
        threshold=_threshold(score["threshold"]), genuine=score["genuine"],
        impostor=score["impostor"], genuine_accepted=score["genuine_accepted"],
        impostors_accepted=score["impostors_accepted"], tar_exact=score.get("tar_exact", ""),
        kind=score.get("kind", ""), rate="tar",
        rate_exact=score.get("rate_exact") or score.get("tar_exact", ""),
        roc=[types_pb2.RocPoint(far=p["far"], tar=p["tar"], threshold=_threshold(p["threshold"]),
                                exact=p["exact"]) for p in score.get("roc", [])])


def _timestamp(value) -> Timestamp:
    stamp = Timestamp()
    if value is not None:
        stamp.FromDatetime(value)
    return stamp


def entry_to_proto(entry: Entry) -> ranker_pb2.LeaderboardEntry:
    return ranker_pb2.LeaderboardEntry(
        rank=entry.rank, participant=entry.participant,
        organisation="" if entry.organisation_hidden else entry.organisation,
        organisation_hidden=entry.organisation_hidden, submission_id=entry.submission_id,
        ranking_score=entry.ranking_score, protocols=entry.protocols,
        model_size_mb=entry.model_size_mb or 0.0, latency_ms=entry.latency_ms or 0.0,
        submitted_at=_timestamp(entry.submitted_at), baseline=entry.baseline)


def board_to_proto(board: Board) -> ranker_pb2.Leaderboard:
    return ranker_pb2.Leaderboard(
        track_id=board.track_id, entries=[entry_to_proto(e) for e in board.entries],
        frozen=board.frozen, updated_at=_timestamp(board.updated_at or board.frozen_at))


def submission_to_proto(row: dict, shown: bool, private: bool) -> ranker_pb2.Submission:
    message = ranker_pb2.Submission(
        submission_id=row["id"], track_id=row["track_id"], state=row["state"],
        created_at=_timestamp(row["created_at"]), public=shown)
    if private or shown:
        for pid, score in (row["scores"] or {}).items():
            message.scores.append(score_to_proto(pid, score))
        if row["ranking_score"] is not None:
            message.ranking_score = row["ranking_score"]
    if private:
        message.participant_id = row["participant_id"]
        message.error = row["error"] or ""
        if row["validation"]:
            json_format.ParseDict(row["validation"], message.validation,
                                  ignore_unknown_fields=True)
    return message


class RankerServicer(ranker_pb2_grpc.RankerServiceServicer):
    def __init__(self, pool: ConnectionPool, boards: Leaderboards, results: Results,
                 watcher: BoardWatcher, admin_token: str = "") -> None:
        self.pool = pool
        self.boards = boards
        self.results = results
        self.watcher = watcher
        self.admin_token = admin_token

    def _organiser(self, context: grpc.ServicerContext) -> bool:
        metadata = dict(context.invocation_metadata() or ())
        presented = metadata.get("authorization", "").removeprefix("Bearer ").strip()
        return bool(self.admin_token) and hmac.compare_digest(presented.encode("utf-8"),
                                                              self.admin_token.encode("utf-8"))

    def _check_challenge(self, challenge_id: str) -> None:
        if challenge_id and challenge_id != self.boards.challenge.id:
            raise NotFound(f"this ranker serves challenge {self.boards.challenge.id!r}, "
                           f"not {challenge_id!r}", code="challenge_not_found")

    def RecordResult(self, request, context):
        # Scores are the leaderboard: only the dispatcher (holding the organisers'
        # token) may write them, whoever else can reach this port.
        if not self._organiser(context):
            raise PermissionDenied("recording results needs the organisers' token",
                                   code="admin_token_required")
        if not request.submission_id:
            raise InvalidInput("submission_id is required")
        scores = {s.protocol_id: score_from_proto(s) for s in request.scores}
        recorded = self.results.record(request.submission_id, scores,
                                       request.model_size_mb or None, request.latency_ms or None)
        reply = ranker_pb2.RecordResultResponse(rank=recorded.rank)
        if recorded.ranking is not None:
            reply.ranking_score = float(recorded.ranking)
        return reply

    def GetLeaderboard(self, request, context):
        self._check_challenge(request.challenge_id)
        return board_to_proto(self.boards.board(request.track_id))

    def WatchLeaderboard(self, request, context) -> Iterator[ranker_pb2.Leaderboard]:
        self._check_challenge(request.challenge_id)
        self.boards.challenge.track(request.track_id)
        for board in self.watcher.watch(request.track_id, context.is_active):
            yield board_to_proto(board)

    def GetSubmission(self, request, context):
        private = self._organiser(context)
        with self.pool.connection() as conn:
            row = submissions.get(conn, request.submission_id)
        shown = row["id"] in self.boards.shown_ids({row["track_id"]})
        if not (private or shown):
            raise NotFound(f"no submission {request.submission_id!r}",
                           code="submission_not_found")
        return submission_to_proto(row, shown, private)

    def ListSubmissions(self, request, context):
        private = self._organiser(context)
        with self.pool.connection() as conn:
            rows = submissions.find(conn, request.participant_id or None,
                                    request.track_id or None, list(request.states) or None,
                                    request.limit or 100)
        shown = self.boards.shown_ids({r["track_id"] for r in rows})
        return ranker_pb2.ListSubmissionsResponse(submissions=[
            submission_to_proto(r, r["id"] in shown, private) for r in rows
            if private or r["id"] in shown])
