"""The embedder's core: features equal a direct onnxruntime run, resume, non-finite rows."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from cli.main import cli
from mfr.onnxzoo import build_tiny_model
from mfr.testset import format as testset_format
from mfr.testset.synth import synth_testset
from services.embedder.embedding import embed_testset, model_sha256
from services.embedder.parts import LocalParts
from services.embedder.pipeline import Cancelled, Pipeline, non_finite_rows, preprocess
from services.embedder.runtime import Runner


@pytest.fixture(scope="module")
def testset(tmp_path_factory):
    # 721 images in shards of 100: batches straddle shard ends, the last shard is short.
    return synth_testset(tmp_path_factory.mktemp("embed") / "ts", scale=0.0004, seed=11,
                         shard_size=100)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    onnx.save(build_tiny_model(feature_dim=32, seed=5), path)
    return path


def all_images(testset) -> np.ndarray:
    return np.concatenate([testset.read_shard(s.index) for s in testset.shards])


def direct_run(model_path, images, mean, std, batch) -> np.ndarray:
    """What the features must equal: plain onnxruntime on the platform's preprocessing."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = (images.astype(np.float32).transpose(0, 3, 1, 2) - np.float32(mean)) / np.float32(std)
    return np.concatenate([session.run(None, {name: x[i:i + batch]})[0]
                           for i in range(0, len(x), batch)])


def test_preprocessing_is_the_validators_formula():
    images = np.random.default_rng(0).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    expected = (images.astype(np.float32).transpose(0, 3, 1, 2) - np.float32(127.5)) / np.float32(
        127.5)
    out = preprocess(images, 127.5, 127.5)
    assert out.dtype == np.float32 and out.shape == (5, 3, 112, 112)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(preprocess(images, 0.0, 1.0), images.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("batch", [7, 64])
def test_features_equal_a_direct_onnxruntime_run(testset, model_file, tmp_path, batch):
    data = model_file.read_bytes()
    runner = Runner(data, device="cpu", threads=1)
    parts = LocalParts(tmp_path / "parts")
    summary = embed_testset(runner, model_sha256(data), testset, parts, 127.5, 127.5,
                            batch_size=batch)
    assert summary.shards_embedded == list(range(len(testset.shards)))
    from services.embedder.embedding import assemble

    dim, bad = assemble(testset, parts, tmp_path / "f.npy")
    features = np.load(tmp_path / "f.npy")
    assert features.shape == (testset.images, 32) and dim == 32 and bad == 0
    # The embedder batches per shard; compare shard by shard at the same batch size.
    expected = np.concatenate([direct_run(model_file, testset.read_shard(s.index), 127.5, 127.5,
                                          batch) for s in testset.shards])
    np.testing.assert_array_equal(features, expected)


def test_self_normalising_model_gets_raw_pixels(testset, tmp_path):
    path = tmp_path / "selfnorm.onnx"
    onnx.save(build_tiny_model(feature_dim=16, seed=2, normalise_inside=True), path)
    result = CliRunner().invoke(cli, ["embed", "--model", str(path), "--testset", str(testset.root),
                                      "--out", str(tmp_path / "f.npy"), "--batch-size", "50",
                                      "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["input_mean"], summary["input_std"]) == (0.0, 1.0)
    expected = np.concatenate([direct_run(path, testset.read_shard(s.index), 0.0, 1.0, 50)
                               for s in testset.shards])
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), expected)


def test_cli_resumes_from_finished_shards(testset, model_file, tmp_path):
    runner = CliRunner()
    args = ["embed", "--model", str(model_file), "--testset", str(testset.root), "--out",
            str(tmp_path / "f.npy"), "--batch-size", "32", "--threads", "1", "--json"]
    first = runner.invoke(cli, [*args, "--shards", "0,2,5"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["shards_embedded"] == 3
    assert not (tmp_path / "f.npy").exists()
    assert sorted(p.name for p in (tmp_path / "f.npy.parts").glob("shard-*.npy")) == [
        "shard-00000.npy", "shard-00002.npy", "shard-00005.npy"]
    second = runner.invoke(cli, args)
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout)
    assert summary["shards_skipped"] == 3
    assert summary["shards_embedded"] == len(testset.shards) - 3
    assert summary["rows"] == testset.images and summary["testset_id"] == testset.id
    expected = np.concatenate([direct_run(model_file, testset.read_shard(s.index), 127.5, 127.5,
                                          32) for s in testset.shards])
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), expected)
    assert not (tmp_path / "f.npy.parts").exists()


def test_parts_of_another_model_are_discarded(testset, model_file, tmp_path):
    other = tmp_path / "other.onnx"
    onnx.save(build_tiny_model(feature_dim=32, seed=6), other)
    parts = LocalParts(tmp_path / "parts")
    data = other.read_bytes()
    embed_testset(Runner(data, threads=1), model_sha256(data), testset, parts, 127.5, 127.5,
                  shards=[0, 1], batch_size=16)
    data = model_file.read_bytes()
    summary = embed_testset(Runner(data, threads=1), model_sha256(data), testset, parts, 127.5,
                            127.5, batch_size=16)
    assert summary.shards_skipped == []
    np.testing.assert_array_equal(parts.get(0), direct_run(model_file, testset.read_shard(0),
                                                           127.5, 127.5, 16))


def _nan_model() -> bytes:
    """Feature = sqrt(mean of each channel): NaN where a channel's normalised mean is < 0."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Sqrt", ["flat"], ["feature"], name="root"),
    ]
    graph = helper.make_graph(
        nodes, "nan", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                     ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info("feature", TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_non_finite_rows_are_counted_and_kept(testset, tmp_path):
    path = tmp_path / "nan.onnx"
    path.write_bytes(_nan_model())
    result = CliRunner().invoke(cli, ["embed", "--model", str(path), "--testset", str(testset.root),
                                      "--out", str(tmp_path / "f.npy"), "--batch-size", "64",
                                      "--json"])
    assert result.exit_code == 0, result.output
    features = np.load(tmp_path / "f.npy")
    means = (all_images(testset).astype(np.float64).mean(axis=(1, 2)) - 127.5) / 127.5
    expected_bad = int((means < 0).any(axis=1).sum())
    assert 0 < expected_bad < testset.images
    assert features.shape == (testset.images, 3)
    assert json.loads(result.stdout)["non_finite_rows"] == expected_bad
    assert int((~np.isfinite(features).all(axis=1)).sum()) == expected_bad


def test_non_finite_rows_counts_nan_inf_and_zero():
    features = np.ones((6, 4), dtype=np.float32)
    features[1, 2] = np.nan
    features[3, 0] = np.inf
    features[4] = 0
    features[5, 1] = 0  # a zero element is fine
    assert non_finite_rows(features) == 3


def test_a_corrupt_shard_stops_the_pipeline_with_its_error(testset, model_file, tmp_path):
    import shutil

    copy = tmp_path / "ts"
    shutil.copytree(testset.root, copy)
    shard = copy / testset.shards[3].file
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF
    shard.write_bytes(bytes(data))
    broken = testset_format.TestSet(copy)
    runner = Runner(model_file.read_bytes(), threads=1)
    written = []
    pipeline = Pipeline(runner.run, broken, 127.5, 127.5, 16)
    with pytest.raises(testset_format.TestSetCorrupt, match="sha256"):
        pipeline.embed(list(range(len(broken.shards))), lambda i, f: written.append(i))
    assert written == [0, 1, 2]  # what was read before the bad shard was finished


def test_a_failing_writer_and_a_cancel_stop_the_pipeline(testset, model_file):
    runner = Runner(model_file.read_bytes(), threads=1)

    def failing(index, features):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        Pipeline(runner.run, testset, 127.5, 127.5, 16).embed([0, 1, 2], failing)
    pipeline = Pipeline(runner.run, testset, 127.5, 127.5, 16)
    done = []

    def cancel_after_first(index, features):
        done.append(index)
        pipeline.cancel()

    with pytest.raises(Cancelled):
        pipeline.embed(list(range(len(testset.shards))), cancel_after_first)
    assert done == [0]
