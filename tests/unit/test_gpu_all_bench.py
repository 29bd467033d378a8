"""bench/gpu_all.sh, the device check of the GPU paths, on this machine's CPU.

Without torch (the normal test environment) the script must skip every torch check with
its reason, keep the identification row 'n/a', and exit 0 (1 with --strict). With torch
(skipped otherwise) its --device cpu flow runs end to end on tiny sizes and every check
passes: the plumbing the lent GPU machine will run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_all import (
    FAIL,
    IDENTIFICATION_NA,
    NA,
    PASS,
    SKIPPED,
    Check,
    exit_code,
    identification_check,
    table,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_all.sh"


def run_script(tmp_path: Path, pythonpath: str, *args: str) -> tuple[int, str, list[dict]]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GPU_ALL_DEVICE")}
    env.update(PYTHON=sys.executable, OUT=str(out), PYTHONPATH=pythonpath)
    done = subprocess.run(["bash", str(SCRIPT), "--work", str(tmp_path / "work"), *args],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    lines = [json.loads(line) for line in (out / "gpu_all.json").read_text().splitlines()]
    assert (out / "gpu_all.log").read_text() == done.stdout
    return done.returncode, done.stdout, lines


def table_rows(output: str) -> dict[str, list[str]]:
    """The final table's rows by check letter: [title, result, figure, status]."""
    rows = [line.strip("| ").split(" | ") for line in output.splitlines()
            if line.startswith("| ") and not line.startswith("| check |")]
    return {row[0].split(".")[0]: [row[0].split(". ", 1)[1], *row[1:]] for row in rows}


def test_the_exit_status_counts_failures_and_with_strict_skips():
    ran = [Check("a", "x", PASS), Check("e", "y", NA, IDENTIFICATION_NA)]
    assert exit_code(ran) == 0 and exit_code(ran, strict=True) == 0
    skipped = [*ran, Check("b", "z", SKIPPED, "skipped: no GPU")]
    assert exit_code(skipped) == 0 and exit_code(skipped, strict=True) == 1
    assert exit_code([*ran, Check("c", "w", FAIL)]) == 1


def test_the_table_has_one_row_per_check_and_escapes_pipes():
    text = table([Check("a", "one", PASS, "ok", "max |x|"), Check("b", "two", FAIL, "bad")])
    lines = text.splitlines()
    assert lines[0] == "| check | result | figure | pass/fail |" and len(lines) == 4
    assert lines[2] == "| a. one | ok | max /x/ | pass |"
    assert table_rows(text)["b"] == ["two", "bad", "", "FAIL"]


def test_identification_is_not_pretended_on_the_gpu():
    check = identification_check()
    assert (check.key, check.status, check.result) == ("e", NA, IDENTIFICATION_NA)
    assert check.result == "n/a: 1:N search runs on the CPU"


def test_without_torch_every_torch_check_is_skipped_with_its_reason(tmp_path):
    hidden = tmp_path / "no-torch" / "torch"  # shadows any installed torch
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('torch hidden by the test')\n")
    code, output, lines = run_script(tmp_path, str(hidden.parent), "--device", "cpu")
    assert code == 0, output
    rows = table_rows(output)
    assert sorted(rows) == ["a", "b", "c", "d", "e"]
    for key in "abcd":
        assert rows[key][1:] == ["skipped: torch is not installed", "", SKIPPED], rows[key]
    assert rows["e"][1] == IDENTIFICATION_NA and rows["e"][3] == NA
    assert [line["check"] for line in lines] == ["environment", *"abcde", "summary"]
    assert lines[-1]["exit"] == 0
    strict, output, _ = run_script(tmp_path, str(hidden.parent), "--device", "cpu", "--strict")
    assert strict == 1, output


@pytest.mark.slow
def test_the_cpu_flow_passes_every_check(tmp_path):
    torch = pytest.importorskip("torch")
    torch_path = str(Path(torch.__file__).resolve().parents[1])  # for the child processes
    code, output, lines = run_script(
        tmp_path, torch_path, "--device", "cpu", "--depth", "0", "--bench-batch", "8",
        "--repeats", "2", "--moderate", "1000", "--parity-images", "4", "--scale", "0.0003")
    assert code == 0, output
    rows = table_rows(output)
    assert {key: row[3] for key, row in rows.items()} == {
        "a": PASS, "b": PASS, "c": PASS, "d": PASS, "e": NA}, output
    assert rows["a"][0] == "torch-cpu embedding bit-identical across two processes"
    assert rows["a"][1] == "bit-identical" and rows["d"][1] == "byte-identical"
    assert rows["b"][1] == "within 1e-4; TARs identical (7 protocols)"
    by_check = {line["check"]: line for line in lines}
    assert by_check["a"]["sha256"][0] == by_check["a"]["sha256"][1]
    assert by_check["b"]["lda_max_abs_diff"] <= 1e-4 and by_check["b"]["deep_max_abs_diff"] <= 1e-4
    assert by_check["c"]["same_output"] and by_check["c"]["images_per_s"]["bare"] > 0
    assert by_check["summary"]["statuses"] == {"a": PASS, "b": PASS, "c": PASS, "d": PASS,
                                               "e": NA}
