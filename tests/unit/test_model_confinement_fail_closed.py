"""Where a model's process cannot install its seccomp filter, no model runs (fail closed)
unless the organiser opted out (MFR_ALLOW_UNCONFINED_MODELS): then it runs, and says so.

The service-like process below first loads a seccomp filter of its own that refuses
``seccomp()`` and ``prctl(PR_SET_SECCOMP)`` (as a container runtime's profile may):
every process it starts inherits it, so its model processes genuinely cannot install
theirs. It runs in a subprocess: a filter cannot be removed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pyseccomp = pytest.importorskip("pyseccomp")

SERVICE = r"""
import json, sys, tempfile
from pathlib import Path
from tests.sandbox_support import refuse_seccomp

refuse_seccomp()

from mfr.challenge import load_challenge
from mfr.errors import Unavailable
from mfr.onnxzoo import build_tiny_model, save_model
from mfr.sandbox.inspect import self_check
from services.validator.sandbox import GIB, SandboxLimits
from services.validator.validator import Validator, ValidatorOptions

confined = sys.argv[1] == "required"
work = Path(tempfile.mkdtemp())
model = work / "model.onnx"
save_model(build_tiny_model(batch=1), model)
limits = SandboxLimits(memory_bytes=4 * GIB, wall_seconds=60, threads=1, confined=confined)
out = {}
try:
    out["check"] = self_check(("services.validator.probe",), 1, False, required=confined)
except RuntimeError as exc:
    out["check_error"] = str(exc)
checker = Validator.create(work, latency_factor=1000.0, options=ValidatorOptions(limits=limits))
try:
    report = checker.validate(model, load_challenge().track("A"))
    out["report"] = {"ok": report.ok, "errors": report.error_codes}
except Unavailable as exc:
    out["unavailable"] = {"code": exc.code, "message": exc.message}
print(json.dumps(out))
"""


def _service(mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", SERVICE, mode], capture_output=True,
                            text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_the_filter_no_model_runs_and_the_check_fails():
    found = _service("required")
    # The start-up check fails (the service stays NOT_SERVING), naming the cause...
    assert "seccomp filter cannot be installed" in found["check_error"]
    # ...and a validation is the platform's failure, retried later: never the model's
    # rejection, and the model was never read.
    assert found["unavailable"]["code"] == "sandbox_unavailable"
    assert "seccomp filter cannot be installed" in found["unavailable"]["message"]
    assert "report" not in found


def test_with_the_organisers_opt_out_models_run_and_the_check_says_unconfined():
    found = _service("opted-out")
    assert found["check"]["seccomp"] is False and "check_error" not in found
    assert found["report"] == {"ok": True, "errors": []}
