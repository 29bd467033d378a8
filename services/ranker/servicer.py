"""RankerService: protobuf <-> the ranker's core (boards, submissions) only; it only reads.

Callers are external tools, which need no service token (services/ranker/server.py,
``PUBLIC_METHODS``): so every method here must be safe for anyone. Without the
organisers' token (``authorization: Bearer TOKEN`` metadata) they see public data
only, i.e. the submissions shown on a board; another submission is NOT_FOUND, as
over HTTP. Results are written by
the dispatcher holding the submission's lease (:mod:`mfr.records.results`).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from psycopg_pool import ConnectionPool

from mfr.errors import NotFound
from mfr.ranker.v1 import ranker_pb2, ranker_pb2_grpc
from mfr.ranking import wire
from mfr.ranking.board import Board, Entry
from mfr.records import submissions
from mfr.records.boards import Leaderboards
from services.ranker.watch import BoardWatcher


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
            message.scores.append(wire.to_proto(pid, score))
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
    def __init__(self, pool: ConnectionPool, boards: Leaderboards, watcher: BoardWatcher,
                 admin_token: str = "") -> None:
        self.pool = pool
        self.boards = boards
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
        shown = self.boards.is_shown(row)
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
        shown = self.boards.shown_ids({r["track_id"] for r in rows},
                                      request.participant_id or None)
        return ranker_pb2.ListSubmissionsResponse(submissions=[
            submission_to_proto(r, r["id"] in shown, private) for r in rows
            if private or r["id"] in shown])
