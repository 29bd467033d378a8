"""The dispatcher works for a claim under its upload's request id: each line it writes names
the submission and the id, and each call it makes carries the id to the service, whose
handler runs under it. The real PostgreSQL and S3; the peers are the stand-ins of
tests/integration/dispatcher_support.py, on a real gRPC server."""

from __future__ import annotations

import inspect

import pytest
import structlog
from structlog.testing import capture_logs

from mfr.challenge import served_challenge
from mfr.embedder.v1 import embedder_pb2_grpc
from mfr.logs import current_request_id
from mfr.records.leases import Leases
from mfr.rpc.client import channel
from mfr.rpc.peers import Peers
from mfr.scorer.v1 import scorer_pb2_grpc
from mfr.validator.v1 import validator_pb2_grpc
from services.dispatcher.config import DispatchTuning
from services.dispatcher.dispatcher import Dispatcher
from services.dispatcher.stages import StageContext, Stages
from tests.integration.dispatcher_support import FakeEmbedder, FakeScorer, FakeValidator
from tests.journey_support import add_participant, add_submission
from tests.rpc_support import SERVICE_TOKEN, serving

pytestmark = pytest.mark.integration


def noting(fake: type, seen: list, *methods: str):
    """An instance of ``fake`` whose ``methods`` note (method, the request id they ran under)."""

    def wrap(name: str):
        original = getattr(fake, name)
        if inspect.isgeneratorfunction(original):
            def streaming(self, request, context):
                seen.append((name, current_request_id()))
                yield from original(self, request, context)
            return streaming

        def unary(self, request, context):
            seen.append((name, current_request_id()))
            return original(self, request, context)
        return unary

    return type(f"Noting{fake.__name__}", (fake,), {m: wrap(m) for m in methods})()


@pytest.fixture
def rig(db_pool, object_store):
    seen: list[tuple[str, str | None]] = []
    peers = ((validator_pb2_grpc.add_ValidatorServiceServicer_to_server,
              noting(FakeValidator, seen, "Validate"), "mfr.validator.v1.ValidatorService"),
             (embedder_pb2_grpc.add_EmbedderServiceServicer_to_server,
              noting(FakeEmbedder, seen, "SubmitJob", "WatchJob", "GetJob"),
              "mfr.embedder.v1.EmbedderService"),
             (scorer_pb2_grpc.add_ScorerServiceServicer_to_server,
              noting(FakeScorer, seen, "SubmitJob", "WatchJob", "GetJob"),
              "mfr.scorer.v1.ScorerService"))
    with serving(*peers, name="trail-peers", max_workers=16) as server, \
            channel(f"127.0.0.1:{server.port}", SERVICE_TOKEN) as ch:
        settings = DispatchTuning(dispatch_lease_s=5.0, dispatch_poll_s=0.1, dispatch_workers=1)
        leases = Leases(db_pool, "dispatcher-trail", settings.dispatch_lease_s)
        stage = StageContext(leases, object_store,
                             Peers.connect({n: ch for n in ("validator", "embedder", "scorer")}),
                             *served_challenge(), "testset-123")
        yield Dispatcher(leases, Stages(stage), settings), seen, db_pool


def _queued(pool, request_id: str | None) -> str:
    with pool.connection() as conn:
        pid, _ = add_participant(conn, "Ann")
        sid = add_submission(conn, pid, state="queued")
        conn.execute("UPDATE submissions SET request_id = %s WHERE id = %s", (request_id, sid))
    return sid


def test_every_line_and_every_call_of_a_claim_carries_the_uploads_id(rig):
    dispatcher, seen, pool = rig
    sid = _queued(pool, "upload-12")
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        assert dispatcher.run_once().kind == "done"
    with pool.connection() as conn:
        assert conn.execute("SELECT state FROM submissions WHERE id = %s",
                            (sid,)).fetchone()["state"] == "scored"
    called = {method for method, _ in seen}
    assert {"Validate", "SubmitJob", "WatchJob"} <= called, seen
    assert {request_id for _, request_id in seen} == {"upload-12"}, seen
    driving = [e for e in logs if e["event"] == "driving"]
    assert [(e["submission"], e["request_id"]) for e in driving] == [(sid, "upload-12")]
    rpc = [e for e in logs if e["event"] == "rpc"]  # the services' side of each call
    assert rpc and {e["request_id"] for e in rpc} == {"upload-12"}
    assert [e for e in logs if e.get("request_id") != "upload-12"] == []


def test_a_row_uploaded_before_ids_were_stored_goes_by_its_submission_id(rig):
    dispatcher, seen, pool = rig
    sid = _queued(pool, None)
    assert dispatcher.run_once().kind == "done"
    assert seen and {request_id for _, request_id in seen} == {sid}
