"""Helpers of the distributed-scoring tests (no tests here): data, stored inputs, workers.

The data are small but shaped like the challenge: a masked cross protocol,
an all-to-all protocol with two race subsets in the same universe, some
invalid (NaN) rows, exact duplicate rows (ties) and a tile size small enough
for a few dozen tiles. Workers are real processes (``mfr serve scorer-worker``)
against the test's own schema and buckets.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cli.stack.ports import free_port
from mfr.common.v1 import types_pb2
from mfr.manifest import Manifest
from mfr.ranking import wire
from mfr.rpc.client import channel, health_status
from mfr.scorer.v1 import scorer_pb2, scorer_pb2_grpc
from mfr.testset.format import INFO_NAME, MANIFEST_NAME, TestSetWriter
from tests.rpc_support import FINISHED, SERVICE_TOKEN, serving
from tests.worker_support import Workers

TILE_SIZE = 96
CHALLENGE_TOML = """
id = "scorer-test"
title = "distributed scoring test"
[ranking]
weights = { mask = 0.25, mr-all = 0.75 }
[[protocols]]
id = "mask"
kind = "cross"
probe = "mask"
gallery = "nonmask"
far = 1e-3
""" + "".join(f"""[[protocols]]
id = "{pid}"
kind = "all"
tag = "{tag}"
far = {far}
""" for pid, tag, far in (("mr-all", "mr", "1e-4"), ("r0", "r0", "1e-3"), ("r1", "r1", "1e-3")))


@dataclass
class JobData:
    features: np.ndarray
    manifest: Manifest


def job_data(count: int = 900, dim: int = 24, seed: int = 7) -> JobData:
    """Random identities; ``mr`` images split into races r0/r1; masked probes of other people."""
    rng = np.random.default_rng(seed)
    identities = count // 5
    identity = np.sort(rng.integers(0, identities, size=count))
    centres = rng.standard_normal((identities, dim)).astype(np.float32)
    features = centres[identity] + 0.9 * rng.standard_normal((count, dim)).astype(np.float32)
    features[rng.choice(count, 3, replace=False)] = np.nan  # invalid: score -inf
    copies = rng.choice(count, 8, replace=False)
    features[copies[4:]] = features[copies[:4]]  # exact duplicates: tied scores
    tags = []
    for row in range(count):
        if identity[row] % 4 == 3:  # a quarter of the people are in the mask protocol
            tags.append(frozenset({"mask" if row % 2 else "nonmask"}))
        else:
            tags.append(frozenset({"mr", f"r{identity[row] % 2}"}))
    manifest = Manifest(tuple(f"img/{row:06d}.png" for row in range(count)),
                        tuple(f"id{i:05d}" for i in identity), tuple(tags))
    return JobData(features.astype(np.float32), manifest)


def store_testset(store, data: JobData, folder: Path) -> str:
    """A real test set folder; only testset.json and the manifest go to S3 (the scorer
    reads nothing else). Returns the test-set id."""
    with TestSetWriter(folder / "testset", shard_size=len(data.manifest)) as writer:
        writer.add(np.zeros((len(data.manifest), 112, 112, 3), dtype=np.uint8))
        testset = writer.finish(data.manifest, name="scorer test")
    for name in (MANIFEST_NAME, INFO_NAME):
        store.put_file(store.buckets.testsets, f"{testset.id}/{name}", testset.root / name)
    return testset.id


def store_features(store, features: np.ndarray, key: str = "features/job.npy"):
    buffer = io.BytesIO()
    np.save(buffer, features)
    return store.put_bytes(store.buckets.features, key, buffer.getvalue())


def offline_score(data: JobData, folder: Path) -> dict:
    """``mfr score --json --roc`` on the same data: the number every run must equal."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("path", "identity", "tags"))
        for path, identity, tags in zip(data.manifest.paths, data.manifest.identities,
                                        data.manifest.tags):
            writer.writerow((path, identity, ";".join(sorted(tags))))
    np.save(folder / "features.npy", data.features)
    (folder / "challenge.toml").write_text(CHALLENGE_TOML)
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "score", "--json", "--roc", "--backend", "cpu",
         "--challenge", str(folder / "challenge.toml"), "--manifest", str(folder / "manifest.csv"),
         "--features", str(folder / "features.npy")],
        capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def as_offline(result: dict) -> dict:
    """The service's result JSON in ``mfr score --json --roc``'s shape."""
    keys = ("tar", "far", "threshold", "genuine", "impostor", "genuine_accepted",
            "impostors_accepted")
    doc = {"protocols": {pid: {k: r[k] for k in keys} for pid, r in result["protocols"].items()},
           "ranking_score": result["ranking_score"],
           "roc": {pid: r["roc"] for pid, r in result["protocols"].items()}}
    return doc


def job_scores_as_offline(job: scorer_pb2.Job) -> dict:
    """The Job message's scores in the same shape, decoded as the dispatcher decodes them."""
    fields = ("tar", "far", "threshold", "genuine", "impostor", "genuine_accepted",
              "impostors_accepted")
    return {s.protocol_id: {k: wire.from_proto(s)[k] for k in fields} for s in job.scores}


# --- the API (in-process) and the workers (processes) -------------------------------------
@dataclass
class ScorerApi:
    stub: scorer_pb2_grpc.ScorerServiceStub
    store: object
    close: object  # () -> None

    def submit(self, job_id: str, features_ref, testset_id: str,
               challenge: str = CHALLENGE_TOML) -> scorer_pb2.Job:
        return self.stub.SubmitJob(scorer_pb2.SubmitJobRequest(
            job_id=job_id, testset_id=testset_id, challenge_toml=challenge,
            features=types_pb2.ObjectRef(bucket=features_ref.bucket, key=features_ref.key,
                                         sha256=features_ref.sha256)), timeout=30)

    def wait(self, job_id: str, timeout: float = 90) -> tuple[scorer_pb2.Job, list]:
        """Watch the job until it ends; returns the last message and every message seen."""
        seen = []
        for job in self.stub.WatchJob(scorer_pb2.GetJobRequest(job_id=job_id), timeout=timeout):
            seen.append(job)
            if job.state in FINISHED:
                return job, seen
        raise AssertionError(f"the watch of {job_id} ended before the job: {seen[-1:]}")

    def result(self, job: scorer_pb2.Job) -> dict:
        return json.loads(self.store.get_bytes(job.result.bucket, job.result.key))


def start_api(db_pool, object_store, watch_poll_s: float = 0.2) -> ScorerApi:
    from services.scorer.control import JobControl
    from services.scorer.jobs import JobBook
    from services.scorer.queue import Deferrer
    from services.scorer.servicer import ScorerServicer

    service = JobControl(db_pool, JobBook(db_pool), Deferrer(db_pool),
                             object_store.buckets.features, watch_poll_s)
    stack = ExitStack()
    server = stack.enter_context(serving(
        (scorer_pb2_grpc.add_ScorerServiceServicer_to_server, ScorerServicer(service),
         "mfr.scorer.v1.ScorerService"), name="scorer-test"))
    ch = stack.enter_context(channel(f"127.0.0.1:{server.port}", SERVICE_TOKEN))
    return ScorerApi(scorer_pb2_grpc.ScorerServiceStub(ch), object_store, stack.close)


def start_api_process(service_env: dict, object_store, log: Path) -> ScorerApi:
    """The scorer API as it runs in production: ``python -m services.scorer``."""
    port = free_port()
    env = {**os.environ, **service_env, "MFR_GRPC_PORT": str(port), "MFR_METRICS_PORT": "0",
           "MFR_SCORER_WATCH_POLL_S": "0.2"}
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "services.scorer"], env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while health_status(f"127.0.0.1:{port}") != "SERVING":
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"scorer API did not serve: {log.read_text()[-3000:]}")
        time.sleep(0.1)

    def close() -> None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    stub = scorer_pb2_grpc.ScorerServiceStub(channel(f"127.0.0.1:{port}", SERVICE_TOKEN))
    return ScorerApi(stub, object_store, close)


# Fast failure detection for tests: heartbeats every 0.5 s, lost after 3 s.
WORKER_ENV = {"MFR_SCORER_TILE_SIZE": str(TILE_SIZE), "MFR_SCORER_THREADS": "1",
              "MFR_SCORER_HEARTBEAT_S": "0.5", "MFR_SCORER_STALLED_S": "3",
              "MFR_SCORER_REAP_EVERY_S": "0.5", "MFR_SCORER_POLL_S": "0.5",
              "MFR_SCORER_RETRY_WAIT_S": "0", "MFR_SCORER_BACKEND": "cpu",
              "MFR_SHUTDOWN_GRACE_S": "5", "OPENBLAS_NUM_THREADS": "1",
              "OMP_NUM_THREADS": "1"}


# --- fixtures ------------------------------------------------------------------------
@pytest.fixture(scope="session", name="offline_reference")
def offline_reference_fixture(tmp_path_factory) -> dict:
    """``mfr score --json --roc`` on :func:`job_data` (computed once per session)."""
    return offline_score(job_data(), tmp_path_factory.mktemp("offline"))


@pytest.fixture(name="scoring")
def scoring_fixture(db_pool, object_store, service_env, tmp_path, offline_reference):
    """The API in-process, the inputs stored, and a pool to start worker processes in."""
    data = job_data()
    api = start_api(db_pool, object_store)
    workers = Workers(service_env, tmp_path / "workers", "scorer-worker", WORKER_ENV)
    setup = {"api": api, "workers": workers, "data": data, "pool": db_pool,
             "testset_id": store_testset(object_store, data, tmp_path),
             "features": store_features(object_store, data.features),
             "offline": offline_reference, "closers": [api.close]}
    yield setup
    workers.stop_all()
    for close in setup["closers"]:
        close()


def workers_of(pool, job_id: str) -> set[str]:
    """The workers that recorded a tile of the job."""
    with pool.connection() as conn:
        return {r["done_by"] for r in conn.execute(
            "SELECT DISTINCT done_by FROM scoring_tiles WHERE job_id = %s", (job_id,))}


def queue_tasks(pool, job_id: str) -> list[dict]:
    """The job's tasks in procrastinate's table (successful ones are deleted)."""
    with pool.connection() as conn:
        return conn.execute(
            "SELECT id, task_name, status::text AS status, attempts, args"
            " FROM procrastinate_jobs WHERE args->>'job_id' = %s ORDER BY id", (job_id,)).fetchall()
