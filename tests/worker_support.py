"""Service processes for the integration tests (queue workers, mostly): ``mfr serve KIND``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

from cli.stack.ports import free_port
from mfr.rpc.client import health_status


@dataclass
class Workers:
    """Processes of one kind (``mfr serve KIND``: a queue worker, or a service) of one test;
    all are stopped (killed if need be) at exit."""

    env: dict[str, str]
    logs: Path
    kind: str  # "scorer-worker", "embedder-worker"
    defaults: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def start(self, name: str, wait: bool = True, **extra_env: str) -> subprocess.Popen:
        port = free_port()
        env = {**os.environ, **self.env, "MFR_METRICS_PORT": "0", **self.defaults, **extra_env,
               "MFR_GRPC_PORT": str(port), "MFR_WORKER_NAME": name,
               "MFR_CACHE_DIR": str(self.logs / "cache" / name)}
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "serve", self.kind], env=env,
                stdout=log, stderr=subprocess.STDOUT)
        self.processes[name], self.ports[name] = process, port
        if wait:
            self.wait_serving(name)
        return process

    def wait_serving(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while health_status(f"127.0.0.1:{self.ports[name]}") != "SERVING":
            if self.processes[name].poll() is not None:
                raise AssertionError(f"{name} exited: {self.log(name)[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} not SERVING: {self.log(name)[-3000:]}")
            time.sleep(0.1)

    def start_many(self, count: int, prefix: str = "w", **extra_env: str) -> None:
        with futures.ThreadPoolExecutor(count) as pool:
            names = [f"{prefix}{i}" for i in range(count)]
            for name in names:
                self.start(name, wait=False, **extra_env)
            list(pool.map(self.wait_serving, names))

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait(timeout=10)

    def signal(self, name: str, signum: int) -> None:
        self.processes[name].send_signal(signum)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a test may have stopped it
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for(condition, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
