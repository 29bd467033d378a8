"""Embedding when things go wrong: hostile models, a missing shard, memory, failing steps.

A model's own failure (a hang past the shard's deadline, a runtime error) fails the
job at once with its code and the worker lives on; a corrupt test set names the
shard; out of memory halves the batch, with the same features; any other failure is
retried and, repeated, ends the job with ``shard_failed``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from mfr.common.v1 import types_pb2
from mfr.embedder.v1 import embedder_pb2
from mfr.onnxzoo.hostile import crash_on_bright_images, hang, memory_hog, nan_on_dark_images
from tests.integration.embedder_support import GOOD_MODEL, reference_features, shard_rows
from tests.worker_support import wait_for

# slow: mostly waiting on hanging models and deadlines, so it runs in the stack lane
# (scripts/test-lanes.sh) beside the e2e stacks rather than in the CPU-bound quick lane.
pytestmark = [pytest.mark.integration, pytest.mark.slow]
FAILED, DONE = types_pb2.JOB_STATE_FAILED, types_pb2.JOB_STATE_DONE


def test_a_hanging_model_fails_with_embed_timeout_and_the_worker_goes_on(embedding,
                                                                         good_reference):
    api, workers, _ = embedding
    workers.start("w")
    api.submit("hangs", api.model(hang(), "hang"))  # the deadline: the fixture's 6 s floor
    started = time.monotonic()
    job = api.wait("hangs")
    assert (job.state, job.error_code) == (FAILED, "embed_timeout")
    assert "did not finish embedding shard" in job.error
    assert time.monotonic() - started < 60
    api.submit("after", api.model(GOOD_MODEL, "good"))
    after = api.wait("after")
    assert after.state == DONE
    assert np.array_equal(api.features(after).view(np.int32), good_reference.view(np.int32))


def test_a_cancel_stops_the_model_within_seconds(embedding):
    api, workers, db = embedding
    workers.start("w")
    # A long deadline (1 s a image x 20 x 40 images): only the cancel can stop it.
    api.submit("long", api.model(hang(), "hang"), latency_ms=1000.0)
    wait_for(lambda: [r for r in shard_rows(db, "long") if r["started_at"]],
             what="the hanging shard to start")
    time.sleep(1.0)
    cancelled = api.stub.CancelJob(embedder_pb2.GetJobRequest(job_id="long"))
    assert cancelled.state == types_pb2.JOB_STATE_CANCELLED
    freed = time.monotonic()
    api.submit("next", api.model(GOOD_MODEL, "good"))
    assert api.wait("next").state == DONE
    assert time.monotonic() - freed < 15  # the worker was freed in seconds, not at 800 s


def test_a_runtime_error_fails_the_job_with_the_runtimes_message(embedding):
    api, workers, _ = embedding
    workers.start("w")
    api.submit("crashes", api.model(crash_on_bright_images(), "crash"))
    job = api.wait("crashes")
    assert (job.state, job.error_code) == (FAILED, "run_failed")
    assert "indices element out of data bounds" in job.error
    api.submit("after", api.model(GOOD_MODEL, "good"))
    assert api.wait("after").state == DONE  # the worker survived its model's crash


def test_nan_rows_are_kept_and_counted(embedding, small_testset, tmp_path):
    api, workers, _ = embedding
    workers.start_many(2)
    model = nan_on_dark_images()
    api.submit("nan", api.model(model, "nan"))
    job = api.wait("nan")
    assert job.state == DONE, job.error
    features = api.features(job)
    bad = int((~np.isfinite(features).all(axis=1)).sum())
    assert 0 < bad < len(features) and job.non_finite_rows == bad
    reference = reference_features(model, small_testset.root, tmp_path / "ref")
    assert np.array_equal(features.view(np.int32), reference.view(np.int32))


def test_a_missing_shard_fails_the_job_naming_it(embedding, object_store, small_testset):
    api, workers, _ = embedding
    object_store.delete(object_store.buckets.testsets, f"{small_testset.id}/shards/shard-00002.npy")
    workers.start("w")
    api.submit("holes", api.model(GOOD_MODEL, "good"))
    job = api.wait("holes")
    assert (job.state, job.error_code) == (FAILED, "testset_corrupt")
    assert "shard 2 " in job.error


def test_out_of_memory_halves_the_batch_and_keeps_the_numbers(embedding, small_testset,
                                                              tmp_path):
    api, workers, db = embedding
    # About 150 MB a image under a 3 GB address-space limit: 32 images do not fit, 4 do.
    workers.start("w", MFR_EMBEDDER_MEMORY_MB="3072")
    model = memory_hog(per_image_mb=150)
    api.submit("greedy", api.model(model, "greedy"), latency_ms=100.0)  # deadline 80 s
    job = api.wait("greedy", timeout=300)
    assert job.state == DONE, job.error
    sizes = {r["batch_size"] for r in shard_rows(db, "greedy")}
    assert sizes and max(sizes) < 32
    reference = reference_features(model, small_testset.root, tmp_path / "ref")
    assert np.array_equal(api.features(job).view(np.int32), reference.view(np.int32))


def test_a_shard_that_keeps_failing_ends_the_job_with_shard_failed(embedding):
    api, workers, db = embedding
    workers.start_many(2, MFR_EMBEDDER_FAULT_FAIL_SHARD="1")
    api.submit("flaky", api.model(GOOD_MODEL, "good"))
    job = api.wait("flaky")
    assert (job.state, job.error_code) == (FAILED, "shard_failed")
    assert "shard 1 failed 3 times" in job.error and "injected failure" in job.error
    assert next(r for r in shard_rows(db, "flaky") if r["shard"] == 1)["failures"] == 3
