"""gRPC calls carry the caller's request id (``x-request-id``), and a service's handler logs
under it: a real server on 127.0.0.1, the clients of mfr/rpc/calls.py."""

from __future__ import annotations

import re

import pytest
import structlog
from structlog.contextvars import bound_contextvars
from structlog.testing import capture_logs

from mfr.logs import current_request_id, get_logger
from mfr.ranker.v1 import ranker_pb2, ranker_pb2_grpc
from mfr.rpc.calls import stream, unary
from mfr.rpc.client import channel
from tests.rpc_support import SERVICE_TOKEN, serving

SERVICE = "mfr.ranker.v1.RankerService"
NEW_ID = re.compile(r"[0-9a-f]{32}")
log = get_logger("tests.trail")


class Recorder(ranker_pb2_grpc.RankerServiceServicer):
    """Notes the request id each handler step ran under; ``hop-*`` calls the server again."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.stub = None  # set once the server listens

    def GetSubmission(self, request, context):
        self.seen.append((request.submission_id, current_request_id()))
        log.info("handling", submission=request.submission_id)
        if request.submission_id.startswith("hop-"):
            unary("ranker", self.stub.GetSubmission,
                  ranker_pb2.GetSubmissionRequest(submission_id="leaf"), timeout=5)
        return ranker_pb2.Submission(submission_id=request.submission_id)

    def WatchLeaderboard(self, request, context):
        for step in range(3):
            self.seen.append((f"step-{step}", current_request_id()))
            yield ranker_pb2.Leaderboard(track_id=request.track_id)


@pytest.fixture
def recorder():
    servicer = Recorder()
    with serving((ranker_pb2_grpc.add_RankerServiceServicer_to_server, servicer, SERVICE),
                 name="trail") as server, \
            channel(f"127.0.0.1:{server.port}", SERVICE_TOKEN) as ch:
        servicer.stub = ranker_pb2_grpc.RankerServiceStub(ch)
        yield servicer


def _get(recorder, submission_id: str, **kwargs):
    return unary("ranker", recorder.stub.GetSubmission,
                 ranker_pb2.GetSubmissionRequest(submission_id=submission_id), timeout=5, **kwargs)


def test_a_unary_call_forwards_the_bound_id_and_the_handler_logs_under_it(recorder):
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs, \
            bound_contextvars(request_id="upload-7"):
        _get(recorder, "s1")
    assert recorder.seen == [("s1", "upload-7")]
    handling = [e for e in logs if e["event"] == "handling"]
    rpc = [e for e in logs if e["event"] == "rpc"]
    assert [e["request_id"] for e in handling] == ["upload-7"]
    assert [e["request_id"] for e in rpc] == ["upload-7"]
    assert current_request_id() is None  # the caller's binding ended with its block


def test_a_stream_forwards_it_to_every_step_of_the_handler(recorder):
    with bound_contextvars(request_id="upload-8"):
        boards = list(stream("ranker", recorder.stub.WatchLeaderboard,
                             ranker_pb2.GetLeaderboardRequest(track_id="A")))
    assert len(boards) == 3
    assert recorder.seen == [(f"step-{i}", "upload-8") for i in range(3)]


def test_a_handler_that_calls_on_forwards_the_same_id(recorder):
    with bound_contextvars(request_id="upload-9"):
        _get(recorder, "hop-1")
    assert recorder.seen == [("hop-1", "upload-9"), ("leaf", "upload-9")]


def test_without_a_bound_id_the_service_makes_one_and_the_callers_own_metadata_wins(recorder):
    _get(recorder, "plain")
    with bound_contextvars(request_id="upload-10"):
        _get(recorder, "explicit", metadata=(("x-request-id", "chosen-1"),))
    (_, made), explicit = recorder.seen
    assert NEW_ID.fullmatch(made)
    assert explicit == ("explicit", "chosen-1")


def test_a_malformed_incoming_id_is_replaced(recorder):
    _, call = recorder.stub.GetSubmission.with_call(
        ranker_pb2.GetSubmissionRequest(submission_id="odd"),
        metadata=(("x-request-id", "rm -rf /"),), timeout=5)
    (_, seen), = recorder.seen
    assert NEW_ID.fullmatch(seen)
    assert ("x-request-id", seen) in tuple(call.trailing_metadata())
