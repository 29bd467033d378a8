"""The embedder API in-process, a small real test set and models in S3, worker processes.

Every run's features must equal ``mfr embed``'s on the same model and test set (same
runtime, batch size and padding): :func:`reference_features`.
"""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mfr.common.v1 import types_pb2
from mfr.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from mfr.onnxzoo import build_tiny_model
from mfr.rpc.client import channel
from mfr.testset.store import upload_testset
from mfr.testset.synth import synth_testset
from tests.rpc_support import FINISHED, SERVICE_TOKEN, serving
from tests.worker_support import Workers

# Fast failure detection: heartbeats every 0.5 s, a worker lost after 3 s.
WORKER_ENV = {"MFR_EMBEDDER_THREADS": "1", "MFR_EMBEDDER_RUNTIMES": "onnxruntime-cpu",
              "MFR_EMBEDDER_HEARTBEAT_S": "0.5", "MFR_EMBEDDER_STALLED_S": "3",
              "MFR_EMBEDDER_REAP_EVERY_S": "0.5", "MFR_EMBEDDER_POLL_S": "0.5",
              "MFR_EMBEDDER_RETRY_WAIT_S": "0", "MFR_EMBEDDER_MEMORY_MB": "4096",
              "MFR_SHUTDOWN_GRACE_S": "5", "OMP_NUM_THREADS": "1"}
SHARD_SIZE = 40  # 4 shards of the ~150-image synthetic test set, the last one short


@dataclass
class EmbedderApi:
    stub: embedder_pb2_grpc.EmbedderServiceStub
    store: object
    testset_id: str

    def model(self, data: bytes, name: str) -> types_pb2.ObjectRef:
        stored = self.store.put_bytes(self.store.buckets.models, f"models/{name}.onnx", data)
        return types_pb2.ObjectRef(bucket=stored.bucket, key=stored.key, sha256=stored.sha256)

    def submit(self, job_id: str, model: types_pb2.ObjectRef, challenge_toml: str = "",
               latency_ms: float = 1.0, owner: str = "p") -> embedder_pb2.Job:
        return self.stub.SubmitJob(embedder_pb2.SubmitJobRequest(
            job_id=job_id, model=model, testset_id=self.testset_id, input_mean=127.5,
            input_std=127.5, challenge_toml=challenge_toml, latency_ms=latency_ms, owner=owner,
            features=types_pb2.ObjectRef(bucket=self.store.buckets.features,
                                         key=f"features/{job_id}.npy")), timeout=30)

    def wait(self, job_id: str, timeout: float = 120) -> embedder_pb2.Job:
        last = None
        for job in self.stub.WatchJob(embedder_pb2.GetJobRequest(job_id=job_id),
                                      timeout=timeout):
            last = job
            if job.state in FINISHED:
                return job
        raise AssertionError(f"the watch of {job_id} ended before the job: {last}")

    def features(self, job: embedder_pb2.Job) -> np.ndarray:
        data = self.store.get_bytes(job.features.bucket, job.features.key)
        return np.load(io.BytesIO(data), allow_pickle=False)


def reference_features(model: bytes, testset_root: Path, folder: Path) -> np.ndarray:
    """``mfr embed`` on the same model and test set: what every run must equal, bit for bit."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(model)
    subprocess.run([sys.executable, "-m", "cli.main", "embed", "--model",
                    str(folder / "model.onnx"), "--testset", str(testset_root), "--out",
                    str(folder / "features.npy"), "--threads", "1", "--mean", "127.5",
                    "--std", "127.5", "--json"], check=True, capture_output=True, timeout=300)
    return np.load(folder / "features.npy")


GOOD_MODEL = build_tiny_model(feature_dim=64, seed=3).SerializeToString()


@pytest.fixture(scope="session")
def small_testset(tmp_path_factory):
    return synth_testset(tmp_path_factory.mktemp("embed-ts") / "ts", scale=0.00008, seed=5,
                         shard_size=SHARD_SIZE)


@pytest.fixture(scope="session")
def good_reference(small_testset, tmp_path_factory) -> np.ndarray:
    return reference_features(GOOD_MODEL, small_testset.root, tmp_path_factory.mktemp("ref"))


@pytest.fixture
def embedding(db_pool, object_store, service_env, tmp_path, small_testset):
    """The API in-process (fast deadlines), the test set in S3, and a pool of workers."""
    from services.embedder.control import Deadline, EmbedControl
    from services.embedder.jobs import JobBook
    from services.embedder.queue import Deferrer
    from services.embedder.servicer import EmbedderServicer

    upload_testset(object_store, small_testset)
    control = EmbedControl(db_pool, JobBook(db_pool), Deferrer(db_pool), object_store,
                           tmp_path / "api-cache", Deadline(factor=20.0, floor_s=6.0), 0.2)
    workers = Workers(service_env, tmp_path / "workers", "embedder-worker", WORKER_ENV)
    with serving((embedder_pb2_grpc.add_EmbedderServiceServicer_to_server,
                  EmbedderServicer(control), "mfr.embedder.v1.EmbedderService"),
                 name="embedder-test") as server, \
            channel(f"127.0.0.1:{server.port}", SERVICE_TOKEN) as ch:
        api = EmbedderApi(embedder_pb2_grpc.EmbedderServiceStub(ch), object_store,
                          small_testset.id)
        yield api, workers, db_pool
        workers.stop_all()


def shard_rows(pool, job_id: str) -> list[dict]:
    with pool.connection() as conn:
        return conn.execute("SELECT shard, done_by, batch_size, failures, started_at, done_at"
                            " FROM embedding_shards WHERE job_id = %s ORDER BY shard",
                            (job_id,)).fetchall()
