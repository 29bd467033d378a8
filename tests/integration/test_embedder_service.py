"""The embedder API's contract: what it accepts, idempotent submits, fair shares, fetching.

(What workers do with the queued shards is tests/integration/test_embedder_queue.py and
test_embedder_faults.py.)
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from mfr.common.v1 import types_pb2
from mfr.embedder.v1 import embedder_pb2
from mfr.rpc.interceptors import error_code_of
from mfr.testset.store import fetch_testset
from tests.integration.embedder_support import GOOD_MODEL

pytestmark = pytest.mark.integration


def _refused(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value.code(), error_code_of(error.value)


def test_bad_requests_are_refused_with_their_codes(embedding):
    api, _, _ = embedding
    model = api.model(GOOD_MODEL, "good")
    unhashed = type(model)(bucket=model.bucket, key=model.key)
    assert _refused(lambda: api.submit("bad id!", model)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "job_id_invalid")
    assert _refused(lambda: api.submit("no-hash", unhashed)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "model_missing")
    assert _refused(lambda: api.submit("bad-runtime", model, challenge_toml=(
        'id = "x"\n[embedding]\nruntime = "tpu"\n'))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "challenge_invalid")
    api.testset_id = "0" * 64
    assert _refused(lambda: api.submit("no-testset", model)) == (
        grpc.StatusCode.NOT_FOUND, "testset_not_found")


def test_submit_is_idempotent_and_a_different_request_conflicts(embedding):
    api, _, db = embedding
    model = api.model(GOOD_MODEL, "good")
    first = api.submit("same", model)
    again = api.submit("same", model)
    assert (first.shards_total, again.shards_total) == (4, 4)
    with db.connection() as conn:
        tasks = conn.execute("SELECT count(*) AS n FROM procrastinate_jobs"
                             " WHERE args->>'job_id' = 'same'").fetchone()["n"]
    assert tasks == 4  # queued once
    assert _refused(lambda: api.submit("same", model, latency_ms=99.0)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "job_exists")


def test_a_job_submitted_later_shares_the_workers_instead_of_waiting(embedding):
    api, _, db = embedding
    model = api.model(GOOD_MODEL, "good")
    api.submit("early", model)
    with db.connection() as conn:  # a worker has started the early job's first two shards
        conn.execute("UPDATE embedding_shards SET started_at = now()"
                     " WHERE job_id = 'early' AND shard < 2")
        conn.execute("DELETE FROM procrastinate_jobs"
                     " WHERE args->>'job_id' = 'early' AND (args->>'shard')::int < 2")
    api.submit("late", model)
    with db.connection() as conn:
        order = [(r["job"], int(r["shard"])) for r in conn.execute(
            "SELECT args->>'job_id' AS job, args->>'shard' AS shard FROM procrastinate_jobs"
            " WHERE status = 'todo' ORDER BY priority DESC, id")]
    # The order workers take them in: the two jobs alternate.
    assert order == [("early", 2), ("late", 0), ("early", 3), ("late", 1), ("late", 2),
                     ("late", 3)]


def test_a_cancel_drops_the_waiting_shards_and_an_ended_job_stays(embedding):
    api, _, db = embedding
    api.submit("stop", api.model(GOOD_MODEL, "good"))
    stub = api.stub
    cancelled = stub.CancelJob(embedder_pb2.GetJobRequest(job_id="stop"))
    assert cancelled.state == types_pb2.JOB_STATE_CANCELLED
    with db.connection() as conn:
        statuses = {r["status"] for r in conn.execute(
            "SELECT status::text AS status FROM procrastinate_jobs"
            " WHERE args->>'job_id' = 'stop'")}
    assert statuses == {"cancelled"}
    again = stub.CancelJob(embedder_pb2.GetJobRequest(job_id="stop"))
    assert again.state == types_pb2.JOB_STATE_CANCELLED
    assert _refused(lambda: stub.GetJob(embedder_pb2.GetJobRequest(job_id="nobody"))) == (
        grpc.StatusCode.NOT_FOUND, "job_not_found")


def test_fetched_test_set_is_verified_and_partial(object_store, small_testset, tmp_path):
    from mfr.testset.store import upload_testset

    upload_testset(object_store, small_testset)
    copy = fetch_testset(object_store, small_testset.id, tmp_path / "cache", shards=[1],
                         manifest=False)
    assert copy.id == small_testset.id and not copy.manifest_path.exists()
    np.testing.assert_array_equal(copy.read_shard(1), small_testset.read_shard(1))
    assert not copy.shard_path(0).exists()  # a worker fetches only its shards
