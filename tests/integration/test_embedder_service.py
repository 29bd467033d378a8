"""The EmbedderService against a real S3 server: features, sharing, resume after a kill."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from cli.stack.ports import free_port
from mfr.common.v1 import types_pb2
from mfr.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from mfr.manifest import Manifest
from mfr.onnxzoo import build_tiny_model
from mfr.rpc.client import channel, wait_serving
from mfr.rpc.server import GrpcServer
from mfr.testset.format import TestSet, TestSetWriter
from mfr.testset.store import fetch_testset, upload_testset
from mfr.testset.synth import synth_testset
from services.embedder.jobs import StoredEmbedder
from services.embedder.parts import ObjectParts
from services.embedder.servicer import EmbedderServicer

pytestmark = pytest.mark.integration
SERVICE = "mfr.embedder.v1.EmbedderService"


@pytest.fixture(scope="module")
def testset(tmp_path_factory) -> TestSet:
    return synth_testset(tmp_path_factory.mktemp("ts") / "ts", scale=0.0004, seed=21,
                         shard_size=100)


def direct_run(model: bytes, testset: TestSet, mean: float, std: float, batch: int) -> np.ndarray:
    """Plain onnxruntime on the platform's preprocessing, shard by shard at the same batch."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = []
    for shard in testset.shards:
        images = testset.read_shard(shard.index)
        x = (images.astype(np.float32).transpose(0, 3, 1, 2) - np.float32(mean)) / np.float32(std)
        out += [session.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(out)


def put_model(store, model: onnx.ModelProto, key: str) -> types_pb2.ObjectRef:
    data = model.SerializeToString()
    stored = store.put_bytes(store.buckets.models, key, data)
    return types_pb2.ObjectRef(bucket=stored.bucket, key=stored.key, sha256=stored.sha256)


def get_npy(store, bucket: str, key: str) -> np.ndarray:
    return np.load(io.BytesIO(store.get_bytes(bucket, key)), allow_pickle=False)


@pytest.fixture
def embedder_address(object_store, tmp_path):
    embedder = StoredEmbedder(object_store, tmp_path / "cache", batch_size=32, threads=1)
    server = GrpcServer("embedder", port=0)
    server.add(embedder_pb2_grpc.add_EmbedderServiceServicer_to_server,
               EmbedderServicer(embedder), SERVICE)
    port = server.start()
    server.set_serving()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def test_features_in_object_storage_equal_a_direct_run(object_store, testset, embedder_address):
    assert upload_testset(object_store, testset) is True
    assert upload_testset(object_store, testset) is False  # already there
    model = build_tiny_model(feature_dim=48, seed=3)
    request = embedder_pb2.EmbedRequest(
        job_id="sub-1", model=put_model(object_store, model, "sub-1/model.onnx"),
        testset_id=testset.id, input_mean=127.5, input_std=127.5,
        features=types_pb2.ObjectRef(bucket=object_store.buckets.features, key="features/sub-1.npy"))
    with channel(embedder_address) as ch:
        messages = list(embedder_pb2_grpc.EmbedderServiceStub(ch).Embed(request, timeout=120))
    last = messages[-1]
    assert last.features.key == "features/sub-1.npy" and last.feature_dim == 48
    assert last.progress.done == last.progress.total == testset.images
    assert last.shards_done == last.shards_total == len(testset.shards)
    assert last.non_finite_rows == 0
    done = [m.progress.done for m in messages]
    assert done == sorted(done)
    features = get_npy(object_store, last.features.bucket, last.features.key)
    assert last.features.sha256 == __import__("hashlib").sha256(
        object_store.get_bytes(last.features.bucket, last.features.key)).hexdigest()
    np.testing.assert_array_equal(features, direct_run(model.SerializeToString(), testset,
                                                       127.5, 127.5, 32))
    sidecar = json.loads(object_store.get_bytes(last.features.bucket, "features/sub-1.npy.json"))
    assert sidecar["testset_id"] == testset.id and sidecar["rows"] == testset.images
    # The parts are gone once the matrix is written.
    assert object_store.list_keys(object_store.buckets.features, "parts/") == []


def test_pods_share_a_job_by_shards(object_store, testset, embedder_address):
    upload_testset(object_store, testset)
    model = build_tiny_model(feature_dim=16, seed=4, normalise_inside=True)
    ref = put_model(object_store, model, "sub-2/model.onnx")
    features = types_pb2.ObjectRef(bucket=object_store.buckets.features, key="features/sub-2.npy")
    with channel(embedder_address) as ch:
        stub = embedder_pb2_grpc.EmbedderServiceStub(ch)
        halves = [range(4), range(4, len(testset.shards))]
        for half in halves:  # two "pods", one half each; no matrix yet
            reply = list(stub.Embed(embedder_pb2.EmbedRequest(
                job_id="sub-2", model=ref, testset_id=testset.id, input_mean=0.0,
                input_std=1.0, shards=list(half)), timeout=120))
            assert reply[-1].shards_done == len(half) and not reply[-1].features.key
        parts = ObjectParts(object_store, "sub-2", testset.id)
        assert parts.finished() == set(range(len(testset.shards)))
        final = list(stub.Embed(embedder_pb2.EmbedRequest(
            job_id="sub-2", model=ref, testset_id=testset.id, input_mean=0.0, input_std=1.0,
            features=features), timeout=120))
    # Every shard was finished already: the last call only assembled.
    assert all(m.shards_done == len(testset.shards) for m in final)
    np.testing.assert_array_equal(get_npy(object_store, features.bucket, features.key),
                                  direct_run(model.SerializeToString(), testset, 0.0, 1.0, 32))


def test_errors_come_back_as_status_codes(object_store, testset, embedder_address):
    model = put_model(object_store, build_tiny_model(seed=1), "sub-3/model.onnx")
    with channel(embedder_address) as ch:
        stub = embedder_pb2_grpc.EmbedderServiceStub(ch)
        with pytest.raises(grpc.RpcError) as missing:
            list(stub.Embed(embedder_pb2.EmbedRequest(
                job_id="sub-3", model=model, testset_id="0" * 64, input_mean=127.5,
                input_std=127.5), timeout=60))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as bad:
            list(stub.Embed(embedder_pb2.EmbedRequest(
                job_id="sub-3", model=model, testset_id=testset.id, input_mean=127.5,
                input_std=0.0), timeout=60))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_fetched_test_set_is_verified_and_partial(object_store, testset, tmp_path):
    upload_testset(object_store, testset)
    copy = fetch_testset(object_store, testset.id, tmp_path / "cache", shards=[1])
    assert copy.id == testset.id and copy.manifest.paths == testset.manifest.paths
    np.testing.assert_array_equal(copy.read_shard(1), testset.read_shard(1))
    assert not copy.shard_path(0).exists()  # a pod fetches only its shards


def _subset(source: TestSet, rows: int, out, shard_size: int) -> TestSet:
    m = source.manifest
    with TestSetWriter(out, shard_size) as writer:
        writer.add(np.concatenate([source.read_shard(s.index) for s in source.shards])[:rows])
        return writer.finish(Manifest(m.paths[:rows], m.identities[:rows], m.tags[:rows]))


def _start(env: dict, log_path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "services.embedder"], env=env,
                            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)


def test_a_killed_embedder_resumes_from_its_finished_shards(object_store, service_env, testset,
                                                            tmp_path):
    small = _subset(testset, 240, tmp_path / "small", shard_size=8)  # 30 shards
    model = build_tiny_model(feature_dim=32, seed=8, width=256)  # ~5-10 ms an image
    ref = put_model(object_store, model, "sub-4/model.onnx")
    port = free_port()
    env = {**os.environ, **service_env, "MFR_GRPC_PORT": str(port), "MFR_METRICS_PORT": "0",
           "MFR_CACHE_DIR": str(tmp_path / "cache"), "MFR_TESTSET": str(small.root),
           "MFR_EMBEDDER_BATCH_SIZE": "4", "MFR_EMBEDDER_THREADS": "1"}
    address = f"127.0.0.1:{port}"
    request = embedder_pb2.EmbedRequest(
        job_id="sub-4", model=ref, testset_id=small.id, input_mean=127.5, input_std=127.5,
        features=types_pb2.ObjectRef(bucket=object_store.buckets.features, key="features/sub-4.npy"))
    parts = ObjectParts(object_store, "sub-4", small.id)
    process = _start(env, tmp_path / "embedder.log")
    try:
        wait_serving(address, timeout=60)
        # SERVING means the local test set is published in object storage.
        assert object_store.exists(object_store.buckets.testsets, f"{small.id}/testset.json")
        errors = []

        def consume() -> None:
            with channel(address) as ch:
                try:
                    list(embedder_pb2_grpc.EmbedderServiceStub(ch).Embed(request, timeout=120))
                except grpc.RpcError as exc:
                    errors.append(exc.code())

        consumer = threading.Thread(target=consume)
        consumer.start()
        deadline = time.monotonic() + 60
        while len(parts.finished()) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        process.kill()  # SIGKILL: no clean-up of any kind
        process.wait()
        consumer.join()
    finally:
        if process.poll() is None:
            process.kill()
    finished = parts.finished()
    assert 4 <= len(finished) < len(small.shards), finished
    assert errors == [grpc.StatusCode.UNAVAILABLE]

    process = _start(env, tmp_path / "embedder.log")
    try:
        wait_serving(address, timeout=60)
        with channel(address) as ch:
            messages = list(embedder_pb2_grpc.EmbedderServiceStub(ch).Embed(request, timeout=120))
    finally:
        process.terminate()
        process.wait(timeout=30)
    first, last = messages[0], messages[-1]
    assert first.shards_done >= len(finished)  # the finished shards were skipped
    assert first.progress.done >= sum(small.shards[i].images for i in finished)
    assert last.features.key == "features/sub-4.npy"
    np.testing.assert_array_equal(
        get_npy(object_store, last.features.bucket, last.features.key),
        direct_run(model.SerializeToString(), small, 127.5, 127.5, 4))
