"""The built-in MFR-Ongoing challenge, served by ``mfr up --challenge mfr-ongoing``.

The stack builds a synthetic test set with MFR-Ongoing's parts and protocol files,
and a submission is scored on every protocol kind: its leaderboard entry and its
page carry every column, and the numbers are exactly those of ``mfr score`` on the
same features.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

MODEL = "synth-lda-400"


@pytest.fixture(scope="module")
def ongoing(tmp_path_factory, baseline_models):
    from cli.client import zip_model
    from cli.stack.ports import free_port
    from cli.stack.supervisor import Stack, StackConfig
    from cli.stack.testsets import default_testset

    root = tmp_path_factory.mktemp("ongoing")
    testset = default_testset(0.0005, protocols=True)
    stack = Stack(StackConfig(state_dir=root / "state", gateway_port=free_port(),
                              challenge="mfr-ongoing", testset=testset),
                  say=lambda _line: None)
    try:
        addresses = stack.start()
        yield addresses["gateway"], baseline_models / f"{MODEL}.onnx", testset, \
            zip_model(baseline_models / f"{MODEL}.onnx", root / "model.zip"), root
    finally:
        stack.stop()


def test_a_submission_is_ranked_on_every_protocol_kind(ongoing):
    from cli.client import GatewayClient

    url, onnx, testset, model_zip, root = ongoing
    client = GatewayClient(url, GatewayClient(url).signup("Ongoing")["token"])
    done = client.follow(client.submit(model_zip, "A")["id"], interval=0.5, timeout=600)
    assert done["state"] == "scored", done
    kinds = {pid: score.get("kind") for pid, score in done["scores"].items()}
    assert kinds == {"mask": "cross", "children": "all", "african": "all", "caucasian": "all",
                     "south-asian": "all", "east-asian": "all", "mr-all": "all",
                     "lfw": "pairs", "cfp-fp": "pairs", "agedb-30": "pairs",
                     "ijbc-1e-4": "templates", "ijbc-1e-5": "templates",
                     "mr-1n": "identification"}
    assert len(done["scores"]["lfw"]["fold_accuracies"]) == 10
    assert done["scores"]["mr-1n"]["mated"] > 0

    # Exactly what `mfr score` says on the same features.
    features = root / "features.npy"
    subprocess.run([sys.executable, "-m", "cli.main", "embed", "--model", str(onnx),
                    "--testset", str(testset), "--out", str(features)], check=True,
                   capture_output=True)
    offline = json.loads(subprocess.run(
        [sys.executable, "-m", "cli.main", "score", "--challenge", "mfr-ongoing",
         "--manifest", str(testset / "manifest.csv"), "--features", str(features), "--json"],
        check=True, capture_output=True, text=True).stdout)
    for pid, expected in offline["protocols"].items():
        got = done["scores"][pid]
        rate = "accuracy" if "accuracy" in expected else "tpir" if "tpir" in expected else "tar"
        assert got[rate] == expected[rate], pid
    assert done["ranking_score"] == offline["ranking_score"]

    board = client.leaderboard("A")
    assert [p["id"] for p in board["protocols"]][7:] == [
        "lfw", "cfp-fp", "agedb-30", "ijbc-1e-4", "ijbc-1e-5", "mr-1n"]
    entry = next(e for e in board["entries"] if e["submission_id"] == done["id"])
    assert set(entry["protocols"]) == set(kinds)
    assert entry["protocols"]["lfw"] == done["scores"]["lfw"]["accuracy"]
