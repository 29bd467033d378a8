"""The CLI reads the environment through its settings classes (cli/settings.py), with the
variables and defaults it always had: the gateway and token of the participants' commands,
what ``mfr up`` passes its workers, external servers, PostgreSQL's fsync."""

from __future__ import annotations

import json

from cli.participant import client
from cli.settings import ClientSettings, UpSettings
from cli.stack.postgres import LocalPostgres
from cli.stack.supervisor import Stack, StackConfig
from mfr.cpus import usable_cpus


def test_the_gateway_and_token_come_from_the_options_then_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MFR_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("MFR_GATEWAY", raising=False)
    monkeypatch.delenv("MFR_TOKEN", raising=False)
    (tmp_path / "tokens.json").write_text(json.dumps({"http://gw.example:81": "saved"}))
    with client(None, need_token=False) as api:
        assert (api.url, api.token) == ("http://127.0.0.1:8000", None)
    monkeypatch.setenv("MFR_GATEWAY", "http://gw.example:81/")
    with client(None) as api:
        assert (api.url, api.token) == ("http://gw.example:81", "saved")  # signup's, for it
    monkeypatch.setenv("MFR_TOKEN", "from-the-environment")
    with client(None) as api:
        assert api.token == "from-the-environment"
    with client("http://other:82", "given") as api:
        assert (api.url, api.token) == ("http://other:82", "given")
    monkeypatch.setenv("MFR_TOKEN", "")  # empty: unset, as everywhere
    assert ClientSettings().token is None


def test_mfr_up_takes_external_servers_from_the_environment(monkeypatch, tmp_path):
    for name in ("MFR_DATABASE_URL", "MFR_S3_ENDPOINT", "MFR_S3_ACCESS_KEY", "MFR_S3_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    config = StackConfig.from_settings(UpSettings(), tmp_path)
    assert (config.database_url, config.s3_endpoint, config.s3_access_key) == (None, None, None)
    monkeypatch.setenv("MFR_DATABASE_URL", "postgresql://u:p@db/mfr")
    monkeypatch.setenv("MFR_S3_ENDPOINT", "s3.example:9000")
    monkeypatch.setenv("MFR_S3_ACCESS_KEY", "ak")
    monkeypatch.setenv("MFR_S3_SECRET_KEY", "sk")
    config = StackConfig.from_settings(UpSettings(), tmp_path, scorers=2)
    assert (config.database_url, config.s3_endpoint, config.s3_access_key, config.s3_secret_key,
            config.scorers) == ("postgresql://u:p@db/mfr", "s3.example:9000", "ak", "sk", 2)


def _worker_env(tmp_path, name: str) -> dict[str, str]:
    stack = Stack(StackConfig(state_dir=tmp_path, scorers=2, embedders=1), say=lambda _l: None)
    stack._plan_children()
    return next(c.env for c in stack.children if c.name == name)


def test_mfr_up_shares_the_cores_unless_told_the_threads(monkeypatch, tmp_path):
    monkeypatch.delenv("MFR_SCORER_THREADS", raising=False)
    monkeypatch.delenv("MFR_EMBEDDER_THREADS", raising=False)
    assert _worker_env(tmp_path, "scorer-worker-1")["MFR_SCORER_THREADS"] == str(
        max(1, usable_cpus() // 2))
    assert _worker_env(tmp_path, "embedder-worker-0")["MFR_EMBEDDER_THREADS"] == str(usable_cpus())
    monkeypatch.setenv("MFR_SCORER_THREADS", "3")
    monkeypatch.setenv("MFR_EMBEDDER_THREADS", "0")
    assert _worker_env(tmp_path, "scorer-worker-0")["MFR_SCORER_THREADS"] == "3"
    assert _worker_env(tmp_path, "embedder-worker-0")["MFR_EMBEDDER_THREADS"] == "0"


def test_the_validator_of_a_stack_caches_in_the_machine_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MFR_CACHE_DIR", str(tmp_path / "machine"))
    assert _worker_env(tmp_path, "validator")["MFR_CACHE_DIR"] == str(tmp_path / "machine")


def test_postgres_fsync_is_off_only_when_asked(monkeypatch, tmp_path):
    # The command line only; tests/integration/test_local_postgres.py asks a real server.
    monkeypatch.delenv("MFR_PG_FSYNC_OFF", raising=False)
    assert "fsync=on" in LocalPostgres(tmp_path, 5432).arguments()
    monkeypatch.setenv("MFR_PG_FSYNC_OFF", "1")
    assert "fsync=off" in LocalPostgres(tmp_path, 5432).arguments()
    assert "fsync=on" in LocalPostgres(tmp_path, 5432, fsync=True).arguments()
    monkeypatch.setenv("MFR_PG_FSYNC_OFF", "")
    assert "fsync=on" in LocalPostgres(tmp_path, 5432).arguments()
