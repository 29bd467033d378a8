"""Internal gRPC calls need the service token (MFR_SERVICE_TOKEN); health, reflection and
the ranker's public reads do not.

Real service processes (``mfr serve NAME``) against the test's PostgreSQL and S3: a call
without the token, or with another one, is refused with UNAUTHENTICATED and the stable code
``unauthenticated`` before the servicer runs; the same call with the token reaches the
servicer. The ranker's reads answer anyone. And no gRPC process starts without a token.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mfr.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from mfr.ranker.v1 import ranker_pb2, ranker_pb2_grpc
from mfr.rpc.auth import TOKEN_KEY
from mfr.rpc.client import channel, health_status
from mfr.rpc.interceptors import error_code_of
from mfr.scorer.v1 import scorer_pb2, scorer_pb2_grpc
from tests.rpc_support import SERVICE_TOKEN, serving
from tests.worker_support import Workers

pytestmark = pytest.mark.integration

#: What a caller without the token may send: nothing, an empty one, others, near misses.
WRONG_TOKENS = [None, "", "not-the-service-token", SERVICE_TOKEN + "x", SERVICE_TOKEN[:-1]]


def _sent(token: str | None) -> tuple:
    return () if token is None else ((TOKEN_KEY, token),)


def _ranker_call(ch: grpc.Channel, metadata: tuple = ()):
    board = ranker_pb2_grpc.RankerServiceStub(ch).GetLeaderboard(
        ranker_pb2.GetLeaderboardRequest(track_id="A"), timeout=10, metadata=metadata)
    return board.track_id


def _scorer_call(ch: grpc.Channel, metadata: tuple = ()):
    return scorer_pb2_grpc.ScorerServiceStub(ch).GetJob(
        scorer_pb2.GetJobRequest(job_id=str(uuid.uuid4())), timeout=10, metadata=metadata)


def _embedder_call(ch: grpc.Channel, metadata: tuple = ()):
    return embedder_pb2_grpc.EmbedderServiceStub(ch).GetJob(
        embedder_pb2.GetJobRequest(job_id=str(uuid.uuid4())), timeout=10, metadata=metadata)


class _Ranker(ranker_pb2_grpc.RankerServiceServicer):
    def GetLeaderboard(self, request, context):
        return ranker_pb2.Leaderboard(track_id=request.track_id)

    def GetSubmission(self, request, context):
        return ranker_pb2.Submission(submission_id=request.submission_id)


def _failure(call, *args) -> tuple[str, str | None]:
    with pytest.raises(grpc.RpcError) as err:
        call(*args)
    return err.value.code().name, error_code_of(err.value)


@pytest.mark.parametrize(("kind", "call"), [("scorer", _scorer_call),
                                            ("embedder", _embedder_call)])
def test_a_served_service_answers_only_calls_with_the_service_token(service_env, tmp_path, kind,
                                                                    call):
    processes = Workers(service_env, tmp_path, kind)
    try:
        processes.start(kind)  # waits for SERVING: the health check needs no token
        address = f"127.0.0.1:{processes.ports[kind]}"
        assert health_status(address, f"mfr.{kind}.v1.{kind.capitalize()}Service") == "SERVING"

        with channel(address) as ch:
            for token in WRONG_TOKENS:
                assert _failure(call, ch, _sent(token)) == ("UNAUTHENTICATED",
                                                            "unauthenticated"), token

        with channel(address, SERVICE_TOKEN) as ch:  # reached the servicer: no such job
            assert _failure(call, ch) == ("NOT_FOUND", "job_not_found")
        assert "unauthenticated" in processes.log(kind)  # refusals are logged
    finally:
        processes.stop_all()


def test_the_ranker_serves_its_public_reads_to_anyone(service_env, tmp_path):
    """External tools never hold the service token: the ranker's reads (public data, as
    its servicer decides) answer without it, with or without a wrong one; so do its
    stream and reflection (grpcurl)."""
    processes = Workers(service_env, tmp_path, "ranker")
    try:
        processes.start("ranker")
        address = f"127.0.0.1:{processes.ports['ranker']}"
        with channel(address) as ch:
            for token in WRONG_TOKENS:
                assert _ranker_call(ch, _sent(token)) == "A", token
            replies = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            names = {s.name for s in next(replies).list_services_response.service}
            assert "mfr.ranker.v1.RankerService" in names
            stream = ranker_pb2_grpc.RankerServiceStub(ch).WatchLeaderboard(
                ranker_pb2.GetLeaderboardRequest(track_id="A"), timeout=10)
            assert next(stream).track_id == "A"
            stream.cancel()
            with pytest.raises(grpc.RpcError) as err:  # private, or unknown: the same
                ranker_pb2_grpc.RankerServiceStub(ch).GetSubmission(
                    ranker_pb2.GetSubmissionRequest(submission_id=str(uuid.uuid4())),
                    timeout=10)
            assert (err.value.code().name, error_code_of(err.value)) == \
                ("NOT_FOUND", "submission_not_found")
        with channel(address, SERVICE_TOKEN) as ch:  # platform processes: the same
            assert _ranker_call(ch) == "A"
        assert "unauthenticated" not in processes.log("ranker")
    finally:
        processes.stop_all()


@pytest.mark.parametrize("name", ["validator", "embedder", "embedder-worker", "scorer",
                                  "scorer-worker", "ranker", "dispatcher"])
def test_a_grpc_process_refuses_to_start_without_the_service_token(service_env, name):
    env = {k: v for k, v in {**os.environ, **service_env}.items() if k != "MFR_SERVICE_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "cli.main", "serve", name], check=False,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == \
        "error[config_invalid]: MFR_SERVICE_TOKEN is not set"


def test_a_caller_with_a_stale_token_retries_rather_than_failing_the_submission():
    """During a token rotation some peers still hold the old one: the dispatcher's calls
    fail as transient (retried with back-off), with the stable code, not as the model's fault."""
    from mfr.rpc.calls import RemoteError, unary

    with serving((ranker_pb2_grpc.add_RankerServiceServicer_to_server, _Ranker(),
                  "mfr.ranker.v1.RankerService")) as server, \
            channel(f"127.0.0.1:{server.port}", "the-previous-service-token") as ch:
        stub = ranker_pb2_grpc.RankerServiceStub(ch)
        with pytest.raises(RemoteError) as err:
            unary("ranker", stub.GetLeaderboard, ranker_pb2.GetLeaderboardRequest(track_id="A"),
                  timeout=10)
    assert (err.value.status, err.value.code, err.value.transient) == \
        ("UNAUTHENTICATED", "unauthenticated", True)


def test_only_the_methods_a_server_declares_public_skip_the_token():
    """Exact names: declaring one method public opens that one, not its service."""
    declared = frozenset({"/mfr.ranker.v1.RankerService/GetLeaderboard"})
    with serving((ranker_pb2_grpc.add_RankerServiceServicer_to_server, _Ranker(),
                  "mfr.ranker.v1.RankerService"), public_methods=declared) as server, \
            channel(f"127.0.0.1:{server.port}") as ch:
        assert _ranker_call(ch) == "A"
        stub = ranker_pb2_grpc.RankerServiceStub(ch)
        assert _failure(stub.GetSubmission, ranker_pb2.GetSubmissionRequest(
            submission_id="x"), 10) == ("UNAUTHENTICATED", "unauthenticated")


@pytest.mark.parametrize("method", [
    "/mfr.ranker.v1.RankerService/DeleteEverything",  # misspelt or gone: would stay closed
    "/mfr.scorer.v1.ScorerService/GetJob",  # another server's: not to be opened here
    "mfr.ranker.v1.RankerService.GetLeaderboard",  # not gRPC method names: never matched
    "mfr.ranker.v1.RankerService/GetLeaderboard",
])
def test_a_server_refuses_to_start_with_a_public_method_it_does_not_serve(method):
    with pytest.raises(ValueError, match="is not served here"), \
            serving((ranker_pb2_grpc.add_RankerServiceServicer_to_server, _Ranker(),
                     "mfr.ranker.v1.RankerService"), public_methods=frozenset({method})):
        pass
