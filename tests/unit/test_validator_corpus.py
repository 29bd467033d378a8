"""Every case of the validator corpus through ``mfr validate``: the exact codes, in order.

The corpus (mfr/onnxzoo/corpus.py) has one or more generated model or
zip per code, plus accepted models (a fixed-batch one included). The latency
factor is pinned for all but the calibration test (tests/unit/test_validator_isolation.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from mfr.modelcheck.report import ERROR_CODES
from mfr.onnxzoo.corpus import CASES, Case, write_case

REPORT_KEYS = ["ok", "errors", "warnings", "feature_dim", "model_size_mb", "latency_ms",
               "latency_limit_ms", "input_mean", "input_std"]


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("validator-corpus")
    for case in CASES:
        write_case(case, root)
        if case.challenge_toml:
            (root / case.name / "challenge.toml").write_text(case.challenge_toml, "utf-8")
    return root


def cli_args(case: Case, root: Path) -> list[str]:
    args = ["validate", str(root / case.name / case.filename), "--track", case.track, "--json",
            "--latency-factor", repr(case.latency_factor)]
    if case.challenge_toml:
        args += ["--challenge", str(root / case.name / "challenge.toml")]
    return args


def cli_env(case: Case, cache: Path) -> dict[str, str]:
    env = {"MFR_CACHE_DIR": str(cache), "MFR_VALIDATOR_TIMEOUT_S": "60",
           "MFR_VALIDATOR_MEMORY_MB": "4096"}
    if case.wall_seconds:
        env["MFR_VALIDATOR_TIMEOUT_S"] = repr(case.wall_seconds)
    if case.memory_gib:
        env["MFR_VALIDATOR_MEMORY_MB"] = str(int(case.memory_gib * 1024))
    return env


def test_corpus_is_big_enough_and_covers_every_code():
    assert len(CASES) >= 25
    covered = {code for case in CASES for code in case.errors}
    # run_failed, input_count and input_type are this platform's additions; all covered too.
    assert covered == set(ERROR_CODES)
    assert any(case.ok and "fixed_batch" in case.warnings for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_mfr_validate_gives_the_expected_codes(case: Case, corpus_dir: Path, tmp_path: Path):
    result = CliRunner().invoke(cli, cli_args(case, corpus_dir), env=cli_env(case, tmp_path))
    assert result.exit_code == (0 if case.ok else 1), result.output
    report = json.loads(result.stdout)
    assert list(report)[: len(REPORT_KEYS)] == REPORT_KEYS
    assert [e["code"] for e in report["errors"]] == list(case.errors)
    assert [w["code"] for w in report["warnings"]] == list(case.warnings)
    assert report["ok"] is case.ok
    for finding in report["errors"] + report["warnings"]:
        assert len(finding["message"]) > 20
    assert report["latency_factor"] == case.latency_factor
    assert report["latency_limit_ms"] == pytest.approx(
        (20.0 if case.track == "B" else 10.0) * case.latency_factor
    )
    if case.ok:
        assert report["feature_dim"] > 0 and report["latency_ms"] > 0
        assert report["input_mean"] == case.input_mean
        assert report["input_std"] == (1.0 if case.input_mean == 0.0 else 127.5)
        assert len(report["model_sha256"]) == 64


def test_messages_say_what_was_found_and_the_limit(corpus_dir: Path, tmp_path: Path):
    by_name = {case.name: case for case in CASES}

    def message(name: str) -> str:
        case = by_name[name]
        result = CliRunner().invoke(cli, cli_args(case, corpus_dir), env=cli_env(case, tmp_path))
        return json.loads(result.stdout)["errors"][0]["message"]

    assert "1024" in message("feature_dim") and "512" in message("feature_dim")
    assert "3 nodes" in message("graph_too_small") and "8" in message("graph_too_small")
    assert "0.397 MB" in message("model_too_large") and "0.250 MB" in message("model_too_large")
    assert "[None, 3, 96, 96]" in message("input_size")
    assert "float16" in message("weight_dtype_fp16")
    assert "/etc/passwd" in message("external_data")
    assert "com.example" in message("custom_domain")
    assert "Concat" in message("implicit_batch_flip_test")
    assert "limit" in message("latency") and "6th fastest of 50" in message("latency")


def test_the_command_line_contract(corpus_dir: Path, tmp_path: Path):
    """The real console script: JSON alone on stdout, exit 0 / 1 / 2, usage errors as error[code]."""
    mfr = [sys.executable, "-m", "cli.main"]
    env = {**os.environ, "MFR_CACHE_DIR": str(tmp_path), "MFR_LATENCY_FACTOR": "1000"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*mfr, "validate", *args], capture_output=True, text=True, env=env,
                              timeout=120, check=False)

    accepted = run(str(corpus_dir / "valid_zip" / "model.zip"), "--track", "A", "--json")
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["ok"] is True
    rejected = run(str(corpus_dir / "feature_dim" / "model.onnx"), "--track", "A")
    assert rejected.returncode == 1
    assert "error[feature_dim]" in rejected.stdout
    missing = run(str(tmp_path / "nope.zip"), "--track", "A")
    assert missing.returncode == 2 and missing.stderr.startswith("error[model_unreadable]: ")
    unknown = run(str(corpus_dir / "valid_zip" / "model.zip"), "--track", "Z")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error[unknown_track]: ")
