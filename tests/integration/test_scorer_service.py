"""Distributed scoring against real PostgreSQL, S3 and worker processes: the numbers never move.

Whatever the number of workers, and however many rounds a job needs, the
result equals the offline ``mfr score --json --roc`` on the same data, to the
last bit, ROC points included. Fault tests are in test_scorer_service_faults.py.
"""

from __future__ import annotations

import json
import tomllib
from types import SimpleNamespace

import grpc
import pytest

from mfr.challenge import parse_challenge
from mfr.common.v1 import types_pb2
from mfr.rpc.interceptors import error_code_of
from mfr.scorer.v1 import scorer_pb2

from .test_scorer_service_support import (  # noqa: F401 - the fixtures are used by name
    CHALLENGE_TOML,
    TILE_SIZE,
    as_offline,
    job_scores_as_offline,
    offline_reference_fixture,
    scoring_fixture,
    start_api_process,
    store_features,
    workers_of,
)

pytestmark = pytest.mark.integration


def test_one_two_and_three_workers_equal_offline_mfr_score(scoring):
    api, workers = scoring["api"], scoring["workers"]
    for count in (1, 2, 3):
        while len(workers.processes) < count:
            workers.start(f"w{len(workers.processes)}")
        job_id = f"job-{count}-workers"
        submitted = api.submit(job_id, scoring["features"], scoring["testset_id"])
        assert submitted.state == types_pb2.JOB_STATE_QUEUED
        job, seen = api.wait(job_id)
        assert job.state == types_pb2.JOB_STATE_DONE, job.error
        result = api.result(job)
        assert as_offline(result) == scoring["offline"]
        assert job_scores_as_offline(job) == scoring["offline"]["protocols"]
        assert job.ranking_score == scoring["offline"]["ranking_score"]
        assert [s.protocol_id for s in job.scores] == ["mask", "mr-all", "r0", "r1"]
        assert all(s.tar.tar_exact == f"{s.tar.genuine_accepted}/{s.tar.genuine}"
                   for s in job.scores)
        # the work really was shared, over a grid of many tiles
        assert workers_of(scoring["pool"], job_id) == {f"w{i}" for i in range(count)}
        assert job.progress.total == result["tiles"] > 20
        assert job.progress.done == job.progress.total and job.progress.unit == "tiles"
        done = [m.progress.done for m in seen]
        assert done == sorted(done)
        # pairs/s over the scoring time: every pair of the job was compared
        assert job.progress.pairs_per_second > 0


def test_a_job_needing_a_second_round_equals_offline(scoring, db_pool, service_env,
                                                     object_store, tmp_path):
    """Floors set far too high: merge cannot prove them, plans round 2 and enqueues it.
    The API is the real process here (``python -m services.scorer``)."""
    from services.scorer.engine import ImageLabels, score
    from services.scorer.engine.floors import FloorSettings

    floors = {"expected_min": 1, "expected_factor": 1, "expected_root_divisor": 10**9,
              "sample_min": 64, "sample_hits": 1}
    scoring["workers"].start_many(2, MFR_SCORER_FLOORS=json.dumps(floors))
    api = start_api_process(service_env, object_store, tmp_path / "api.log")
    scoring["closers"].append(api.close)
    api.submit("two-rounds", scoring["features"], scoring["testset_id"])
    job, _ = api.wait("two-rounds")
    assert job.state == types_pb2.JOB_STATE_DONE, job.error
    result = api.result(job)
    assert result["rounds"] == 2
    data = scoring["data"]
    challenge = parse_challenge(tomllib.loads(CHALLENGE_TOML))
    report = score(data.features, ImageLabels.from_manifest(data.manifest), challenge,
                   backend="cpu", tile_size=TILE_SIZE, floor_settings=FloorSettings(**floors))
    assert report.rounds == 2
    assert as_offline(result) == report.to_json(roc=True)
    # the exact numbers do not depend on the floors at all
    assert as_offline(result)["protocols"] == scoring["offline"]["protocols"]
    with db_pool.connection() as conn:
        rounds = conn.execute("SELECT round, tiles_done, tiles_total, merged_at IS NOT NULL AS m"
                              " FROM scoring_rounds WHERE job_id = 'two-rounds' ORDER BY round"
                              ).fetchall()
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["m"] and r["tiles_done"] == r["tiles_total"] for r in rounds)


def test_submit_is_idempotent_per_job_id(scoring, db_pool):
    api = scoring["api"]
    first = api.submit("same", scoring["features"], scoring["testset_id"])
    again = api.submit("same", scoring["features"], scoring["testset_id"])
    assert first.job_id == again.job_id == "same"
    with db_pool.connection() as conn:
        plans = conn.execute("SELECT count(*) AS n FROM procrastinate_jobs"
                             " WHERE task_name = 'scorer.plan'").fetchone()["n"]
    assert plans == 1
    with pytest.raises(grpc.RpcError) as other:
        api.submit("same", scoring["features"], "another-testset")
    assert other.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_code_of(other.value) == "job_exists"
    with pytest.raises(grpc.RpcError) as missing:
        api.stub.GetJob(scorer_pb2.GetJobRequest(job_id="nobody"), timeout=5)
    assert error_code_of(missing.value) == "job_not_found"
    with pytest.raises(grpc.RpcError) as bad:
        api.submit("../escape", scoring["features"], scoring["testset_id"])
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as toml:
        api.submit("bad-toml", scoring["features"], scoring["testset_id"], challenge="[[x")
    assert error_code_of(toml.value) == "challenge_invalid"


def test_bad_inputs_fail_the_job_with_a_stable_code(scoring, object_store):
    api = scoring["api"]
    scoring["workers"].start("w0")
    short = store_features(object_store, scoring["data"].features[:-1], "features/short.npy")
    text = object_store.put_bytes(object_store.buckets.features, "features/text.npy", b"hello")
    absent = SimpleNamespace(bucket=object_store.buckets.features, key="features/absent.npy",
                             sha256="")
    corrupt = SimpleNamespace(bucket=short.bucket, key=short.key, sha256="0" * 64)
    cases = {
        "short": (short, scoring["testset_id"], "features_invalid"),
        "not-npy": (text, scoring["testset_id"], "features_invalid"),
        "absent": (absent, scoring["testset_id"], "features_not_found"),
        "corrupt": (corrupt, scoring["testset_id"], "features_corrupt"),
        "no-testset": (scoring["features"], "0" * 64, "testset_not_found"),
    }
    for job_id, (features, testset_id, _code) in cases.items():
        api.submit(job_id, features, testset_id)
    for job_id, (_f, _t, code) in cases.items():
        job, _ = api.wait(job_id)
        assert job.state == types_pb2.JOB_STATE_FAILED
        assert job.error_code == code, (job_id, job.error)
        assert job.error


def test_cancel_drops_the_waiting_tiles(scoring, db_pool):
    api, workers = scoring["api"], scoring["workers"]
    workers.start("slow", MFR_SCORER_FAULT_TILE_DELAY_S="0.5")
    api.submit("to-cancel", scoring["features"], scoring["testset_id"])
    for job in api.stub.WatchJob(scorer_pb2.GetJobRequest(job_id="to-cancel"), timeout=60):
        if job.state == types_pb2.JOB_STATE_RUNNING and job.progress.total:
            break
    cancelled = api.stub.CancelJob(scorer_pb2.GetJobRequest(job_id="to-cancel"), timeout=10)
    assert cancelled.state == types_pb2.JOB_STATE_CANCELLED
    job, _ = api.wait("to-cancel")
    assert job.state == types_pb2.JOB_STATE_CANCELLED and not job.scores
    with db_pool.connection() as conn:
        statuses = {r["status"]: r["n"] for r in conn.execute(
            "SELECT status::text AS status, count(*) AS n FROM procrastinate_jobs"
            " WHERE task_name = 'scorer.tile' GROUP BY status")}
    assert statuses.get("cancelled", 0) > 10 and statuses.get("todo", 0) == 0
    # cancelling again changes nothing; the worker is still serving
    assert api.stub.CancelJob(scorer_pb2.GetJobRequest(job_id="to-cancel"),
                              timeout=10).state == types_pb2.JOB_STATE_CANCELLED
    assert workers.processes["slow"].poll() is None

