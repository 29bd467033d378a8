"""The torch runtime against onnxruntime, the reference: the same features to 1e-4, the same
TARs, and onnxruntime when the converter lacks an operator. Needs torch (not a CPU
dependency of the project): skipped without it; the GPU run is `bench/embed.py --runtime torch-cuda`
(docs/benchmarks.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner

from cli.main import cli
from mfr.onnxzoo import build_iresnet, build_tiny_model
from mfr.onnxzoo.hostile import hang
from services.embedder.runtime import Runner, open_runtime

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _unit(features: np.ndarray) -> np.ndarray:
    return features / np.linalg.norm(features.astype(np.float64), axis=1, keepdims=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("depth", [18, 0])  # IResNet-18, and the tiny test model
def test_torch_features_agree_with_onnxruntime(device, depth):
    model = (build_iresnet(18, seed=4) if depth else build_tiny_model(seed=4)).SerializeToString()
    images = np.random.default_rng(9).standard_normal((16, 3, 112, 112)).astype(np.float32)
    reference = Runner(model, device="cpu", threads=2).run(images)
    runner = open_runtime(model, f"torch-{device}", threads=2)
    assert runner.info.name == f"torch-{device}" and not runner.info.fallback_reason
    ours = runner.run(images)
    assert ours.shape == reference.shape and ours.dtype == np.float32
    assert np.abs(_unit(ours) - _unit(reference)).max() <= 1e-4


def test_an_operator_the_converter_lacks_falls_back_to_onnxruntime():
    runner = open_runtime(hang(), "torch-cpu", threads=1)  # a Loop with a subgraph
    assert runner.info.name == "onnxruntime-cpu"
    assert "subgraph" in runner.info.fallback_reason


def test_the_parity_case_scores_the_same_on_both_runtimes(tmp_path):
    """A baseline on a synthetic test set: identical TARs on torch and onnxruntime."""
    from mfr.baselines.build import build_baselines
    from mfr.testset.synth import synth_testset

    testset = synth_testset(tmp_path / "ts", scale=0.001, seed=3)
    build_baselines(tmp_path / "baselines")
    runner = CliRunner()
    scores = {}
    for runtime in ("onnxruntime-cpu", "torch-cpu"):
        out = tmp_path / f"{runtime}.npy"
        embedded = runner.invoke(cli, ["embed", "--model", str(tmp_path / "baselines" /
                                                               "synth-lda-400.onnx"),
                                       "--testset", str(testset.root), "--out", str(out),
                                       "--runtime", runtime, "--json"])
        assert embedded.exit_code == 0, embedded.output
        assert json.loads(embedded.stdout)["runtime"]["name"] == runtime
        scored = runner.invoke(cli, ["score", "--manifest", str(testset.manifest_path),
                                     "--features", str(out), "--json"])
        assert scored.exit_code == 0, scored.output
        scores[runtime] = json.loads(scored.stdout)
    # The features differ in their last bits, so thresholds do too; the rates may not.
    rates = {runtime: {pid: (p["tar"], p["genuine_accepted"], p["impostors_accepted"])
                       for pid, p in doc["protocols"].items()} for runtime, doc in scores.items()}
    assert rates["torch-cpu"] == rates["onnxruntime-cpu"]
    assert scores["torch-cpu"]["ranking_score"] == scores["onnxruntime-cpu"]["ranking_score"]
