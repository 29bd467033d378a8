"""``mfr score``: the DESIGN.md section 7 contract, the table, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from mfr.manifest import Manifest, write_manifest
from services.scorer.engine import ImageLabels

from .reference import MR_PROTOCOLS, brute_force, make_challenge, mr_like

KEYS = {"tar", "far", "threshold", "genuine", "impostor", "genuine_accepted", "impostors_accepted"}

CHALLENGE_TOML = """
id = "cli-test"
[ranking]
weights = { mask = 0.25, mr-all = 0.75 }
""" + "".join(
    "[[protocols]]\n" + "".join(f'{k} = {json.dumps(v) if isinstance(v, str) else v}\n'
                                for k, v in p.items())
    for p in MR_PROTOCOLS
)


def write_inputs(tmp_path, features, labels, identities=None):
    tags = [frozenset(t for t, m in labels.tags.items() if m[i]) for i in range(labels.count)]
    identities = identities or [f"id{c:05d}" for c in labels.identity]
    manifest = Manifest(tuple(f"img/{i}.png" for i in range(labels.count)), tuple(identities),
                        tuple(tags))
    paths = {"manifest": tmp_path / "m.csv", "features": tmp_path / "f.npy",
             "challenge": tmp_path / "c.toml"}
    write_manifest(paths["manifest"], manifest)
    np.save(paths["features"], features)
    paths["challenge"].write_text(CHALLENGE_TOML)
    return paths


def run(paths, *extra):
    args = ["score", "--manifest", str(paths["manifest"]), "--features", str(paths["features"])]
    if "challenge" in paths:
        args += ["--challenge", str(paths["challenge"])]
    return CliRunner().invoke(cli, args + list(extra))


@pytest.fixture
def inputs(tmp_path):
    features, labels = mr_like(500, 16, 30)
    features[4] = np.inf
    return features, labels, write_inputs(tmp_path, features, labels)


def test_json_is_the_contract_document_and_exact(inputs):
    features, labels, paths = inputs
    result = run(paths, "--json", "--backend", "cpu")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)  # stdout holds one JSON document and nothing else
    assert set(doc) == {"protocols", "ranking_score"}
    assert all(set(p) == KEYS for p in doc["protocols"].values())
    challenge = make_challenge(MR_PROTOCOLS, {"mask": 0.25, "mr-all": 0.75})
    assert doc == brute_force(features, labels, challenge)


def test_roc_flag_adds_points_outside_the_contract_keys(inputs):
    _, _, paths = inputs
    doc = json.loads(run(paths, "--json", "--roc").stdout)
    assert set(doc) == {"protocols", "ranking_score", "roc"}
    points = doc["roc"]["mr-all"]
    assert [p["far"] for p in points] == [0.1, 0.01, 0.001]
    assert points[-1]["exact"] and points[-1]["tar"] == doc["protocols"]["mr-all"]["tar"]


def test_timings_go_to_stderr_and_leave_the_document_alone(inputs):
    _, _, paths = inputs
    plain = run(paths, "--json", "--backend", "cpu", "--precision", "fp32")
    timed = run(paths, "--json", "--backend", "cpu", "--precision", "fp32", "--timings")
    assert timed.exit_code == 0, timed.stderr
    assert timed.stdout == plain.stdout
    line = json.loads(timed.stderr.strip().splitlines()[-1])
    assert (line["backend"], line["precision"]) == ("cpu", "fp32")
    assert list(line["seconds"]) == ["inputs", "backend", "normalise", "plan", "tiles"]
    assert all(seconds >= 0 for seconds in line["seconds"].values())


def test_table_without_json(inputs):
    _, _, paths = inputs
    result = run(paths)
    assert result.exit_code == 0
    for pid in ("mr-all", "race0", "mask"):
        assert pid in result.stdout
    assert "ranking score:" in result.stdout


def test_only_named_protocols_and_no_ranking_score_without_its_weights(inputs):
    _, _, paths = inputs
    doc = json.loads(run(paths, "--json", "--protocol", "race1", "--protocol", "mask").stdout)
    assert list(doc["protocols"]) == ["race1", "mask"]
    assert "ranking_score" not in doc


def test_identities_are_strings(tmp_path):
    """"00017" and "17" are two people: their images are impostors of each other."""
    rng = np.random.default_rng(31)
    identities = ["00017", "17", "0017", "17", "00017", "9", "9", "x"]
    labels = ImageLabels(np.array([0, 1, 2, 1, 0, 3, 3, 4]), {"mr": np.ones(8, bool)})
    features = rng.standard_normal((8, 4)).astype(np.float32)
    paths = write_inputs(tmp_path, features, labels, identities)
    paths["challenge"].write_text(
        'id = "s"\n[[protocols]]\nid = "all"\nkind = "all"\ntag = "mr"\nfar = 0.1\n')
    doc = json.loads(run(paths, "--json").stdout)
    assert doc["protocols"]["all"]["genuine"] == 3  # 00017 x2, 17 x2, 9 x2
    assert doc["protocols"]["all"]["impostor"] == 28 - 3


@pytest.mark.parametrize("features, code", [
    (np.zeros((499, 16), dtype=np.float32), "features_invalid"),
    (np.zeros((500, 16), dtype=np.float64), "features_invalid"),
    (np.zeros((500, 16, 1), dtype=np.float32), "features_invalid"),
])
def test_bad_features_are_a_clear_error_without_traceback(inputs, features, code):
    _, _, paths = inputs
    np.save(paths["features"], features)
    result = run(paths, "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error[{code}]: ")
    assert "Traceback" not in result.stderr


def test_a_file_that_is_not_npy_is_a_clear_error(inputs):
    _, _, paths = inputs
    paths["features"].write_text("not numpy")
    result = run(paths)
    assert result.exit_code == 2 and "error[features_invalid]" in result.stderr


def test_the_builtin_challenge_names_the_protocol_that_cannot_be_scored(inputs):
    _, _, paths = inputs
    del paths["challenge"]  # built-in ICCV21-MFR: this data has no "children" tag
    result = run(paths, "--json")
    assert result.exit_code == 2
    assert "error[protocol_unscorable]" in result.stderr and "children" in result.stderr


def test_unknown_backend_in_the_environment_is_a_clear_error(inputs, monkeypatch):
    _, _, paths = inputs
    monkeypatch.setenv("MFR_SCORER_BACKEND", "tpu")
    result = run(paths)
    assert result.exit_code == 2 and "error[backend_unknown]" in result.stderr
