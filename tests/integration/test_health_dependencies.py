"""Health follows the dependencies: PostgreSQL or S3 SIGKILLed, then started again.

The servers are this module's own (a private PostgreSQL and a private S3 on free
ports), never the session's: they are killed here. A real scorer process (gRPC:
PostgreSQL and S3) and a real gateway (HTTP) run against them. The issue's
bound: unhealthy within 5 s of a server's death; then healthy again once it is
back, and a request that reads the database succeeds again in the same process
(its pool reconnected).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import urllib3

from cli.stack.ports import free_port
from cli.stack.postgres import LocalPostgres
from cli.stack.seaweed import LocalS3
from mfr.db.migrate import migrate
from mfr.rpc.client import channel, health_status, wait_serving
from mfr.rpc.server import LIVENESS
from mfr.scorer.v1 import scorer_pb2, scorer_pb2_grpc
from mfr.settings import StorageSettings
from mfr.storage import ObjectStore
from tests.rpc_support import SERVICE_TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UNHEALTHY_WITHIN_S = 5.0  # the bound
BACK_WITHIN_S = 20.0  # generous: a restarted server plus the pool's next attempt
SCORER = "mfr.scorer.v1.ScorerService"
ACCESS_KEY, SECRET_KEY, PREFIX = "healthtest", "healthtest-secret-key", "health-"


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL, as in the issue, to the whole group (PostgreSQL's backends too)."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


@dataclass
class PrivateServers:
    postgres: LocalPostgres
    s3: LocalS3

    def kill_postgres(self) -> None:
        _kill_group(self.postgres.process)

    def kill_s3(self) -> None:
        _kill_group(self.s3.process)

    def start_s3(self) -> None:
        """``weed mini`` binds its inner servers (filer 8888, master 9333) on fixed ports,
        checked just before: another test session's weed starting at the same moment can
        take one in between, and this one exits. It looks again on the next start."""
        for attempt in range(3):
            try:
                self.s3.start()
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def env(self) -> dict[str, str]:
        return {"MFR_DATABASE_URL": self.postgres.url, "MFR_S3_ENDPOINT": self.s3.endpoint,
                "MFR_S3_ACCESS_KEY": ACCESS_KEY, "MFR_S3_SECRET_KEY": SECRET_KEY,
                "MFR_BUCKET_PREFIX": PREFIX, "MFR_LOG_FORMAT": "json",
                "MFR_ADMIN_TOKEN": "organisers-token-for-tests",
                "MFR_SERVICE_TOKEN": SERVICE_TOKEN, "MFR_METRICS_PORT": "0",
                "MFR_SHUTDOWN_GRACE_S": "2"}


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServers]:
    root = tmp_path_factory.mktemp("private-servers")
    servers = PrivateServers(LocalPostgres(root / "postgres" / "data", free_port()),
                             LocalS3(root / "s3" / "data", free_port(), ACCESS_KEY, SECRET_KEY))
    migrate(servers.postgres.start(), log=lambda _line: None)
    servers.start_s3()
    ObjectStore.from_settings(StorageSettings(
        s3_endpoint=servers.s3.endpoint, s3_access_key=ACCESS_KEY, s3_secret_key=SECRET_KEY,
        bucket_prefix=PREFIX)).ensure_buckets()
    yield servers
    servers.s3.stop()
    servers.postgres.stop()


@pytest.fixture
def spawn(private: PrivateServers, tmp_path: Path) -> Iterator[Callable[..., None]]:
    """Start ``python -m cli.main serve NAME`` against the private servers; kill it after."""
    started: list[subprocess.Popen] = []

    def start(name: str, **env: str) -> None:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - the child's, until the end
        started.append(subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", name],
            env={**os.environ, **private.env(), **env}, stdout=log, stderr=subprocess.STDOUT))

    yield start
    for process in started:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _within(seconds: float, probe: Callable[[], object], wanted: object) -> object:
    """Poll ``probe`` until it returns ``wanted`` or ``seconds`` pass; return its last answer."""
    deadline = time.monotonic() + seconds
    while True:
        answer = probe()
        if answer == wanted or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


def _changes(log: Path) -> str:
    """The log's lines about dependencies and the pool: why a check kept failing."""
    return "\n".join(line[:300] for line in log.read_text().splitlines()
                     if "dependency" in line or "serving" in line or "pool" in line)


def test_a_service_is_not_serving_while_postgres_or_s3_is_dead_and_serves_again_after(
        private: PrivateServers, spawn, tmp_path: Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    spawn("scorer", MFR_GRPC_PORT=str(port))
    wait_serving(address, timeout=60)
    ch = channel(address, SERVICE_TOKEN)
    stub = scorer_pb2_grpc.ScorerServiceStub(ch)

    def get_job() -> grpc.StatusCode:
        try:
            stub.GetJob(scorer_pb2.GetJobRequest(job_id="no-such-job"), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    # NOT_FOUND is an answer from the database: the job table was read.
    assert get_job() == grpc.StatusCode.NOT_FOUND
    for kill, restart in ((private.kill_postgres, private.postgres.start),
                          (private.kill_s3, private.start_s3)):
        kill()
        assert _within(UNHEALTHY_WITHIN_S, lambda: health_status(address),
                       "NOT_SERVING") == "NOT_SERVING"
        assert health_status(address, SCORER) == "NOT_SERVING"
        assert health_status(address, LIVENESS) == "SERVING"  # alive: no restart wanted
        restart()
        assert _within(BACK_WITHIN_S, lambda: health_status(address), "SERVING") == "SERVING", \
            _changes(tmp_path / "scorer.log")
        assert health_status(address, SCORER) == "SERVING"
        assert _within(BACK_WITHIN_S, get_job, grpc.StatusCode.NOT_FOUND) == \
            grpc.StatusCode.NOT_FOUND
    ch.close()
    log = (tmp_path / "scorer.log").read_text()
    # Each change is logged once, with the dependency it is about.
    assert log.count('"event": "dependency down"') == 2
    assert '"dependency": "postgres"' in log and '"dependency": "s3"' in log
    assert log.count('"event": "not serving"') == 2


def test_the_gateways_healthz_names_the_dead_dependency_and_recovers(
        private: PrivateServers, spawn, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=10))
    spawn("gateway", MFR_GATEWAY_PORT=str(port))

    def healthz() -> int:
        try:
            return http.request("GET", f"{base}/healthz").status
        except urllib3.exceptions.HTTPError:
            return 0

    def board() -> int:
        return http.request("GET", f"{base}/v1/leaderboard/A").status

    assert _within(60, healthz, 200) == 200
    assert board() == 200
    for kill, restart, name in ((private.kill_postgres, private.postgres.start, "postgres"),
                                (private.kill_s3, private.start_s3, "s3")):
        kill()
        assert _within(UNHEALTHY_WITHIN_S, healthz, 503) == 503
        reply = http.request("GET", f"{base}/healthz")
        assert reply.status == 503
        assert reply.json()["status"] == "NOT_SERVING"
        assert list(reply.json()["failing"]) == [name]
        assert http.request("GET", f"{base}/livez").status == 200
        restart()
        assert _within(BACK_WITHIN_S, healthz, 200) == 200, _changes(tmp_path / "gateway.log")
        assert _within(BACK_WITHIN_S, board, 200) == 200
