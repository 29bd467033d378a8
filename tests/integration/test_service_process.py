"""A real service process: SERVING only once ready, graceful exit on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from cli.stack.ports import free_port
from mfr.rpc.client import health_status, wait_serving

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("module", ["services.ranker", "services.scorer"])
def test_service_serves_then_stops_gracefully_on_sigterm(service_env, module, tmp_path):
    port = free_port()
    env = {**os.environ, **service_env, "MFR_GRPC_PORT": str(port), "MFR_METRICS_PORT": "0",
           "MFR_SHUTDOWN_GRACE_S": "2"}
    log = open(tmp_path / "service.log", "wb")  # noqa: SIM115 - the child's stdout until the end
    process = subprocess.Popen([sys.executable, "-m", module], env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        wait_serving(f"127.0.0.1:{port}", timeout=30)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
    lines = (tmp_path / "service.log").read_text()
    assert '"event": "serving"' in lines
    assert '"event": "shutdown complete"' in lines


def test_service_is_not_serving_while_its_database_is_unreachable(service_env, tmp_path):
    port = free_port()
    dead_db = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=1"
    env = {**os.environ, **service_env, "MFR_DATABASE_URL": dead_db,
           "MFR_GRPC_PORT": str(port), "MFR_METRICS_PORT": "0"}
    process = subprocess.Popen([sys.executable, "-m", "services.ranker"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        status = "UNREACHABLE"
        while time.monotonic() < deadline and status == "UNREACHABLE":
            status = health_status(f"127.0.0.1:{port}")
            time.sleep(0.1)
        time.sleep(1.5)  # a few readiness polls
        assert health_status(f"127.0.0.1:{port}") == "NOT_SERVING"
    finally:
        process.kill()
        process.wait()


# The dispatcher holds no organisers' token: it records results under its lease.
@pytest.mark.parametrize("name", ["ranker", "gateway"])
def test_a_process_that_checks_the_organisers_token_refuses_to_start_without_it(service_env,
                                                                                name):
    env = {k: v for k, v in {**os.environ, **service_env}.items() if k != "MFR_ADMIN_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "cli.main", "serve", name], check=False,
                          env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == \
        "error[config_invalid]: MFR_ADMIN_TOKEN is not set"
