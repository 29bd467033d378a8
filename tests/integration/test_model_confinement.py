"""A participant's model has nothing to steal and nowhere to send it (mfr/sandbox).

The probe (mfr.sandbox.inspect.report) runs through exactly the start path of a
model's process: the validator's ``Sandbox.start`` with the confinement of a real
probe job, and the embedder's ``sandbox.start`` with a real ``ChildSpec``; only the
target differs. The service's environment holds credentials as under ``mfr up``,
and the suite's real PostgreSQL and S3 are listening.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mfr.sandbox.client import stop_fork_servers
from mfr.sandbox.environment import PASSED, THREAD_VARIABLES
from mfr.sandbox.inspect import Attempts, report
from services.embedder.worker import sandbox as embedder_sandbox
from services.embedder.worker.child import ChildSpec
from services.validator.sandbox import GIB, Sandbox, SandboxLimits

pytestmark = pytest.mark.integration

SECRETS = {
    "MFR_ADMIN_TOKEN": "admin-token-7f3a",
    "MFR_SERVICE_TOKEN": "service-token-91c2",
    "MFR_S3_ACCESS_KEY": "access-key-55d0",
    "MFR_S3_SECRET_KEY": "secret-key-0b6e",
    "MFR_DATABASE_URL": "postgresql://postgres:pw-e4d1@127.0.0.1:5432/mfr",
}
ALLOWED_NAMES = {*PASSED, *THREAD_VARIABLES, "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE",
                 "PYTHONNOUSERSITE"}


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return parts.hostname, parts.port


@pytest.fixture
def hostile_attempts(tmp_path, servers, monkeypatch):
    """The service's environment with credentials; a credentials file beside the scratch
    folder, as ``mfr up``'s state directory has; a fork server started from here."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    stop_fork_servers()  # the next model process comes from a server exec'd now
    state = tmp_path / "state"
    state.mkdir()
    credentials = state / "credentials.json"
    credentials.write_text(json.dumps(SECRETS))
    yield Attempts(
        connect=(_address(servers.database_url), _address(servers.s3_endpoint)),
        write=(str(state / "planted.txt"), str(tmp_path / "next-to-scratch.txt")),
        read=(str(credentials), f"/proc/{os.getpid()}/environ"),  # the service's own block
        signal_pid=os.getpid(),
        exec_program="/bin/true",
    )
    stop_fork_servers()


def _validator_child(tmp_path: Path, attempts: Attempts):
    workdir = tmp_path / "validation"
    workdir.mkdir()
    model = tmp_path / "upload" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes(b"not even a model")
    sandbox = Sandbox(SandboxLimits(memory_bytes=4 * GIB, wall_seconds=60, threads=1))
    job = sandbox.job(model, workdir, 512)
    attempts = replace(attempts, read=(*attempts.read, str(model)))
    return sandbox.start(job, report, (attempts,)), workdir, model


def _embedder_child(tmp_path: Path, attempts: Attempts):
    workdir = tmp_path / "model-1"
    workdir.mkdir()
    inputs = tmp_path / "testsets"
    inputs.mkdir()
    (inputs / "shard.bin").write_bytes(b"faces")
    spec = ChildSpec(str(workdir / "model.onnx"), "onnxruntime-cpu", 1, str(workdir),
                     4 * GIB, 1 << 20, str(inputs))
    attempts = replace(attempts, read=(*attempts.read, str(inputs / "shard.bin")))
    return embedder_sandbox.start(spec, report, (attempts,)), workdir, inputs / "shard.bin"


@pytest.mark.parametrize("start", [_validator_child, _embedder_child],
                         ids=["validator-probe", "embedder-model"])
def test_the_model_process_has_nothing_to_steal_and_nowhere_to_send_it(
        tmp_path, hostile_attempts, start):
    (child, conn), workdir, given = start(tmp_path, hostile_attempts)
    with conn:
        assert conn.poll(60), (workdir / "child.log").read_text(errors="replace")
        found = json.loads(conn.recv_bytes())
    child.join(10)
    assert child.exitcode == 0

    # Nothing to steal: the block it was exec'd with, not a cleaned copy.
    environ = "\n".join(found["environ"])
    assert not any(secret in environ for secret in SECRETS.values()), environ
    assert {item.partition("=")[0] for item in found["environ"]} <= ALLOWED_NAMES
    assert found["open_fds"] == [0, 1, 2, found["channel_fd"]]

    # Nowhere to send it: seccomp filter, no_new_privs, no socket to PostgreSQL or S3.
    assert (found["seccomp"], found["no_new_privs"]) == (2, 1)
    assert set(found["connect"].values()) == {"PermissionError"}, found["connect"]
    assert found["exec"] == "PermissionError"

    # Reads what it was given and writes only to its scratch folder (Landlock).
    abi = found["enforced"]["landlock_abi"]
    if abi == 0:
        pytest.skip("this kernel has no Landlock: files are guarded by permissions only")
    refused = dict.fromkeys(hostile_attempts.read, "PermissionError")
    assert found["read"] == {**refused, str(given): "ok"}
    assert set(found["write"].values()) == {"PermissionError"}, found["write"]
    assert found["scratch_write"] == "ok"
    assert not any(Path(p).exists() for p in hostile_attempts.write)
    if abi >= 6:
        assert found["signal"] == "PermissionError"  # its service is out of its reach


# The validator service itself, optionally under a filter that refuses seccomp() (as a
# container runtime's profile may): its model processes then cannot install theirs.
SERVICE = """
import runpy, sys
if sys.argv[1] == "no-seccomp":
    from tests.sandbox_support import refuse_seccomp
    refuse_seccomp()
runpy.run_module("services.validator", run_name="__main__")
"""


def _health_of_validator(service_env, tmp_path, mode: str, opt_out: bool) -> tuple[str, str]:
    """(overall, model-confinement) health once the start-up check has had its time."""
    import subprocess
    import sys
    import time

    from cli.stack.ports import free_port
    from mfr.rpc.client import health_status

    port = free_port()
    env = {**os.environ, **service_env, "MFR_GRPC_PORT": str(port), "MFR_METRICS_PORT": "0",
           "MFR_LATENCY_FACTOR": "1", "MFR_CACHE_DIR": str(tmp_path / "cache"),
           **({"MFR_ALLOW_UNCONFINED_MODELS": "1"} if opt_out else {})}
    with open(tmp_path / f"{mode}.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-c", SERVICE, mode], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    try:
        # Ready within seconds when it will be at all (the check starts one model process);
        # a validator that fails closed is given the same time, then asked.
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline and health_status(address) != "SERVING":
            time.sleep(0.5)
        return health_status(address), health_status(address, "model-confinement")
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize(("mode", "opt_out", "expected"), [
    ("normal", False, ("SERVING", "SERVING")),
    # Fail closed: never ready while its models would run unconfined.
    ("no-seccomp", False, ("NOT_SERVING", "NOT_SERVING")),
    # The organiser's opt-out: it serves, and its health says the models are unconfined.
    ("no-seccomp", True, ("SERVING", "NOT_SERVING")),
])
def test_the_validators_health_says_whether_its_models_are_confined(service_env, tmp_path,
                                                                    mode, opt_out, expected):
    assert _health_of_validator(service_env, tmp_path, mode, opt_out) == expected, \
        (tmp_path / f"{mode}.log").read_text(errors="replace")[-3000:]
