"""The shared gRPC runtime through an in-process server on port 0."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from mfr import errors
from mfr.ranker.v1 import ranker_pb2, ranker_pb2_grpc
from mfr.rpc.client import channel, health_status
from mfr.rpc.interceptors import error_code_of
from tests.rpc_support import SERVICE_TOKEN, serving

SERVICE = "mfr.ranker.v1.RankerService"


class Ranker(ranker_pb2_grpc.RankerServiceServicer):
    def GetSubmission(self, request, context):
        if request.submission_id == "missing":
            raise errors.NotFound("submission missing not found", code="submission_not_found")
        if request.submission_id == "bad":
            raise errors.InvalidInput("submission id must be a UUID")
        if request.submission_id == "crash":
            raise RuntimeError("secret internal detail /etc/passwd")
        return ranker_pb2.Submission(submission_id=request.submission_id, state="scored")

    def WatchLeaderboard(self, request, context):
        yield ranker_pb2.Leaderboard(track_id=request.track_id)
        raise errors.Unavailable("database went away", code="db_unavailable")


@pytest.fixture
def server():
    with serving((ranker_pb2_grpc.add_RankerServiceServicer_to_server, Ranker(), SERVICE),
                 name="test-ranker", ready=False) as srv:
        yield srv


@pytest.fixture
def stub(server):
    with channel(f"127.0.0.1:{server.port}", SERVICE_TOKEN) as ch:
        yield ranker_pb2_grpc.RankerServiceStub(ch)


def test_not_serving_until_ready_then_serving(server):
    address = f"127.0.0.1:{server.port}"
    assert health_status(address) == "NOT_SERVING"
    assert health_status(address, SERVICE) == "NOT_SERVING"
    server.set_serving()
    assert health_status(address) == "SERVING"
    assert health_status(address, SERVICE) == "SERVING"


def test_graceful_stop_reports_not_serving_then_unreachable(server):
    server.set_serving()
    address = f"127.0.0.1:{server.port}"
    server.stop(0)
    assert health_status(address) == "UNREACHABLE"


@pytest.mark.parametrize(
    ("submission_id", "status", "code"),
    [
        ("missing", grpc.StatusCode.NOT_FOUND, "submission_not_found"),
        ("bad", grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
    ],
)
def test_domain_errors_map_to_status_and_stable_code(stub, submission_id, status, code):
    with pytest.raises(grpc.RpcError) as err:
        stub.GetSubmission(ranker_pb2.GetSubmissionRequest(submission_id=submission_id))
    assert err.value.code() == status
    assert error_code_of(err.value) == code


def test_unknown_errors_become_internal_without_internals(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.GetSubmission(ranker_pb2.GetSubmissionRequest(submission_id="crash"))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "passwd" not in err.value.details()
    assert "RuntimeError" not in err.value.details()
    assert "request id" in err.value.details()


def test_request_id_is_echoed(stub):
    _, call = stub.GetSubmission.with_call(
        ranker_pb2.GetSubmissionRequest(submission_id="s1"),
        metadata=(("x-request-id", "req-42"),),
    )
    assert ("x-request-id", "req-42") in tuple(call.trailing_metadata())


def test_stream_errors_are_mapped_after_partial_output(stub):
    stream = stub.WatchLeaderboard(ranker_pb2.GetLeaderboardRequest(track_id="A"))
    first = next(stream)
    assert first.track_id == "A"
    with pytest.raises(grpc.RpcError) as err:
        next(stream)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_metrics_count_requests_by_code(stub):
    def count(code):
        return REGISTRY.get_sample_value(
            "mfr_grpc_requests_total",
            {"method": f"/{SERVICE}/GetSubmission", "code": code},
        ) or 0.0

    ok_before, nf_before = count("OK"), count("NOT_FOUND")
    stub.GetSubmission(ranker_pb2.GetSubmissionRequest(submission_id="s2"))
    with pytest.raises(grpc.RpcError):
        stub.GetSubmission(ranker_pb2.GetSubmissionRequest(submission_id="missing"))
    assert count("OK") == ok_before + 1
    assert count("NOT_FOUND") == nf_before + 1


def test_reflection_lists_the_service(server):
    with channel(f"127.0.0.1:{server.port}") as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for s in next(replies).list_services_response.service}
    assert SERVICE in names
    assert "grpc.health.v1.Health" in names


def test_health_watch_sees_the_switch(server):
    with channel(f"127.0.0.1:{server.port}") as ch:
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        server.set_serving()
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
