"""The ``mfr`` participant and organiser commands against a real gateway (real PostgreSQL and S3)."""

from __future__ import annotations

import json
import sys

import pytest
import structlog
from click.testing import CliRunner

from cli.main import cli
from gateway.app import create_app
from tests.journey_support import (
    T0,
    FakeClock,
    ServerThread,
    built_in_scores,
    make_challenge,
    model_zip,
    record_result,
)

pytestmark = pytest.mark.integration
ADMIN = "cli-admin-token"


@pytest.fixture
def cli_env(db_pool, object_store, tmp_path, monkeypatch):
    # The gateway runs in this process: its log lines go to stderr, not into the command
    # output the tests parse (CliRunner captures stdout, where bare structlog prints).
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.__stderr__))
    challenge = make_challenge(max_model_mb=2)
    clock = FakeClock(T0)
    app = create_app(db_pool, object_store, challenge, clock=clock, admin_token=ADMIN)
    with ServerThread(app) as server:
        monkeypatch.setenv("MFR_GATEWAY", server.url)
        monkeypatch.setenv("MFR_CONFIG_DIR", str(tmp_path / "config"))
        monkeypatch.delenv("MFR_TOKEN", raising=False)
        monkeypatch.delenv("MFR_ADMIN_TOKEN", raising=False)
        yield CliRunner(), challenge, db_pool, tmp_path
    structlog.configure(**saved)


def run(runner, *args, ok=True):
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_participant_commands(cli_env):
    runner, challenge, pool, tmp = cli_env
    created = json.loads(run(runner, "signup", "--name", "Ann", "--organisation", "Lab",
                             "--hide-organisation", "--json").output)
    assert set(created) == {"id", "token"}
    saved = json.loads((tmp / "config" / "tokens.json").read_text())
    assert created["token"] in saved.values()
    assert (tmp / "config" / "tokens.json").stat().st_mode & 0o777 == 0o600

    model = tmp / "model.zip"
    model.write_bytes(model_zip())
    queued = json.loads(run(runner, "submit", str(model), "--track", "A", "--no-follow",
                            "--json").output)
    assert queued["state"] == "queued"
    onnx = tmp / "model.onnx"
    onnx.write_bytes(b"onnx bytes")  # a bare .onnx is zipped by the CLI
    run(runner, "submit", str(onnx), "--track", "A", "--no-follow")

    left = json.loads(run(runner, "quota", "--json").output)
    assert (left["used"], left["remaining"]) == (2, 1)
    assert "1 of 3 submissions left today" in run(runner, "quota").output

    status = json.loads(run(runner, "status", "--json").output)["submissions"]
    assert len(status) == 2 and {s["state"] for s in status} == {"queued"}
    assert queued["id"] in run(runner, "status").output

    # Score it (as the dispatcher and ranker would), then read it back.
    with pool.connection() as conn:
        conn.execute("UPDATE submissions SET state = 'scoring' WHERE id = %s", (queued["id"],))
    record_result(pool, challenge, queued["id"], built_in_scores((7, 10), (8, 10)), 1.0, 2.0)
    one = run(runner, "status", queued["id"]).output
    assert "77.500" in one and "mask" in one
    board = json.loads(run(runner, "leaderboard", "--track", "A", "--json").output)
    assert board["entries"][0]["organisation"] is None
    table = run(runner, "leaderboard", "--track", "A").output
    assert "Ann" in table and "77.500" in table and "Lab" not in table

    bad = tmp / "bad.zip"
    bad.write_bytes(b"not a zip")
    refused = run(runner, "submit", str(bad), "--track", "A", ok=False)
    assert refused.exit_code == 2 and "error[zip_invalid]" in refused.output
    run(runner, "submit", str(model), "--track", "A", "--no-follow")
    limited = run(runner, "submit", str(model), "--track", "A", ok=False)
    assert limited.exit_code == 2 and "error[daily_limit]" in limited.output


def test_organiser_commands(cli_env, monkeypatch):
    runner, challenge, pool, tmp = cli_env
    assert "no organisers' token" in run(runner, "admin", "--state-dir", str(tmp / "none"),
                                         "queue", ok=False).output
    monkeypatch.setenv("MFR_ADMIN_TOKEN", ADMIN)
    zips = tmp / "baselines"
    zips.mkdir()
    (zips / "R50.zip").write_bytes(model_zip())
    (zips / "R100.zip").write_bytes(model_zip(payload=b"other" * 99))
    published = json.loads(run(runner, "admin", "baselines", str(zips), "--json").output)
    assert sorted(b["name"] for b in published["baselines"]) == ["R100", "R50"]
    queue = json.loads(run(runner, "admin", "queue", "--json").output)["submissions"]
    assert {s["baseline"] for s in queue} == {True} and len(queue) == 2
    first = queue[0]["id"]
    assert "cancelled" in run(runner, "admin", "cancel", first).output
    rerun = json.loads(run(runner, "admin", "rerun", first, "--json").output)
    assert rerun["state"] == "queued" and rerun["run"] == 2
    second = queue[1]["id"]
    with pool.connection() as conn:
        conn.execute("UPDATE submissions SET state = 'scoring' WHERE id = %s", (second,))
    record_result(pool, challenge, second, built_in_scores((1, 2), (1, 2)), 91.7, 1.9)
    csv_text = run(runner, "admin", "export", "--track", "A").output
    assert csv_text.startswith("rank,participant,organisation") and "MFR" not in csv_text
    assert second in csv_text
    out = tmp / "board.json"
    run(runner, "admin", "export", "--track", "A", "--format", "json", "--out", str(out))
    assert json.loads(out.read_text())["entries"][0]["submission_id"] == second
    frozen = json.loads(run(runner, "admin", "freeze", "--track", "A", "--json").output)
    assert frozen["boards"][0]["frozen"]
    assert "unfrozen" in run(runner, "admin", "freeze", "--track", "A", "--undo").output


def test_help_lists_every_participant_command():
    output = CliRunner().invoke(cli, ["--help"]).output
    for name in ("signup", "submit", "status", "leaderboard", "quota", "admin", "demo"):
        assert name in output
    admin_help = CliRunner().invoke(cli, ["admin", "--help"]).output
    for name in ("queue", "rerun", "cancel", "baselines", "freeze", "export"):
        assert name in admin_help
