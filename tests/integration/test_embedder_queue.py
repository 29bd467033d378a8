"""Embedding at scale: one submission's shards shared by embedder worker processes.

Real PostgreSQL, S3 and worker processes; every finished run's features must equal
``mfr embed``'s on the same model and test set, bit for bit, whatever the number
of workers, the order they take shards in, or a worker killed or frozen mid-shard.
"""

from __future__ import annotations

import signal

import numpy as np
import pytest

from mfr.common.v1 import types_pb2
from tests.integration.embedder_support import GOOD_MODEL, shard_rows
from tests.worker_support import wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_any_number_of_workers_gives_the_features_of_mfr_embed(embedding, good_reference,
                                                               workers):
    api, pool_of_workers, db = embedding
    pool_of_workers.start_many(workers)
    model = api.model(GOOD_MODEL, "good")
    api.submit("job", model)
    job = api.wait("job")
    assert job.state == types_pb2.JOB_STATE_DONE, job.error
    features = api.features(job)
    assert features.dtype == np.float32
    assert np.array_equal(features.view(np.int32), good_reference.view(np.int32))
    rows = shard_rows(db, "job")
    assert len(rows) == 4 and all(r["done_at"] for r in rows)
    assert job.runtime.name == "onnxruntime-cpu" and job.runtime.batch_size == 32
    if workers > 1:  # the shards were shared, not all taken by one worker
        assert len({r["done_by"] for r in rows}) >= 2


def _lose_a_worker(embedding, reference, job_id: str, delay_s: str, lose) -> dict:
    """A worker takes a shard and holds it (``delay_s``), ``lose(workers)`` takes the worker
    away, another one starts: the job ends with the reference features. Returns the row of
    the shard the first worker held."""
    api, workers, db = embedding
    workers.start("first", MFR_EMBEDDER_FAULT_SHARD_DELAY_S=delay_s)
    api.submit(job_id, api.model(GOOD_MODEL, "good"))
    held = wait_for(lambda: [r for r in shard_rows(db, job_id) if r["started_at"]],
                    what="the first worker to take a shard")[0]
    lose(workers)
    workers.start("second")
    job = api.wait(job_id)
    assert job.state == types_pb2.JOB_STATE_DONE, job.error
    assert np.array_equal(api.features(job).view(np.int32), reference.view(np.int32))
    return next(r for r in shard_rows(db, job_id) if r["shard"] == held["shard"])


def test_a_worker_killed_mid_shard_loses_it_to_another(embedding, good_reference):
    redone = _lose_a_worker(embedding, good_reference, "killed", "300",
                            lambda workers: workers.kill("first"))
    assert redone["done_by"] == "second" and redone["failures"] == 1


def test_a_frozen_worker_loses_its_shard_after_the_deadline(embedding, good_reference):
    # SIGSTOP: alive, silent (no heartbeat, no progress): its task is handed back.
    taken = _lose_a_worker(embedding, good_reference, "frozen", "2",
                           lambda workers: workers.signal("first", signal.SIGSTOP))
    assert taken["done_by"] == "second"


def test_a_challenge_on_torch_is_embedded_by_torch_everywhere(embedding, good_reference):
    pytest.importorskip("torch")  # not a CPU dependency: runs where torch is installed
    api, workers, _ = embedding
    workers.start_many(2, MFR_EMBEDDER_RUNTIMES="torch-cpu")
    api.submit("torch", api.model(GOOD_MODEL, "good"),
               challenge_toml='id = "t"\n[embedding]\nruntime = "torch-cpu"\n')
    job = api.wait("torch")
    assert job.state == types_pb2.JOB_STATE_DONE, job.error
    assert job.runtime.name == "torch-cpu" and job.runtime.version.startswith("torch ")
    features = api.features(job)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    reference = good_reference / np.linalg.norm(good_reference, axis=1, keepdims=True)
    assert np.abs(unit - reference).max() <= 1e-4
