"""``mfr config``: every environment variable a process reads, its default and meaning, read off
the settings classes; docs/configuration.md is its ``--markdown`` text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from cli.serve import ENTRY_POINTS
from cli.settings_doc import PROCESSES, REGENERATE, combined, markdown, variables

ROOT = Path(__file__).resolve().parents[2]


def mfr_config(*args: str) -> str:
    result = CliRunner().invoke(cli, ["config", *args])
    assert result.exit_code == 0, result.output
    return result.output


def rows(output: str) -> dict[str, str]:
    """The table's lines by variable."""
    return {line.split()[0]: line for line in output.splitlines() if line.startswith("MFR_")}


def test_the_reference_doc_is_the_generated_text():
    written = (ROOT / "docs" / "configuration.md").read_text()
    assert written == markdown(), (
        f"docs/configuration.md disagrees with the settings classes: run `{REGENERATE}`")


def test_a_process_lists_its_variables_with_type_default_and_meaning():
    table = rows(mfr_config("dispatcher"))
    assert re.match(r"MFR_DISPATCH_WORKERS +int > 0 +2 +Submissions one dispatcher drives at "
                    r"once", table["MFR_DISPATCH_WORKERS"])
    assert re.match(r"MFR_GRPC_PORT +int +50056 +gRPC port", table["MFR_GRPC_PORT"])
    assert re.match(r"MFR_DISPATCH_MAX_ATTEMPTS +int >= 1, <= 1000 +8 ",
                    table["MFR_DISPATCH_MAX_ATTEMPTS"])
    assert "MFR_EMBEDDER_THREADS" not in table  # a worker's, not the dispatcher's


def test_the_gateway_lists_no_grpc_variables():
    table = rows(mfr_config("gateway"))
    assert {"MFR_GATEWAY_PORT", "MFR_HOST", "MFR_SHUTDOWN_GRACE_S"} <= set(table)
    assert not {"MFR_GRPC_PORT", "MFR_METRICS_PORT", "MFR_MAX_WORKERS", "MFR_SERVICE_TOKEN"} & set(table)
    assert re.match(r"MFR_DB_POOL_TIMEOUT_S +float +5\.0 ", table["MFR_DB_POOL_TIMEOUT_S"])


def test_secrets_show_that_they_are_secret_never_a_value(monkeypatch):
    monkeypatch.setenv("MFR_DATABASE_URL", "postgresql://ada:hunter2-pw@db/mfr")
    monkeypatch.setenv("MFR_ADMIN_TOKEN", "organisers-token-hunter2")
    outputs = [mfr_config("dispatcher"), mfr_config(), mfr_config("--json"),
               mfr_config("up", "--json"), mfr_config("ranker")]
    assert not any("hunter2" in output for output in outputs)
    table = rows(outputs[0])
    assert re.match(r"MFR_DATABASE_URL +secret +required \(secret\) ", table["MFR_DATABASE_URL"])
    assert "MFR_ADMIN_TOKEN" not in table  # the dispatcher holds no organisers' token
    assert re.match(r"MFR_ADMIN_TOKEN +secret 16\+ characters +required \(secret\) ",
                    rows(outputs[4])["MFR_ADMIN_TOKEN"])
    up = {v["name"]: v for v in json.loads(outputs[3])["variables"]}
    assert up["MFR_DATABASE_URL"] == {
        "name": "MFR_DATABASE_URL", "type": "secret", "default": None, "secret": True,
        "required": False,
        "meaning": "An external PostgreSQL (URL or conninfo) instead of the embedded one."}


def test_without_a_process_every_variable_once_with_its_readers():
    output = mfr_config()
    for entry in PROCESSES:
        assert re.search(rf"^{re.escape(entry.name)} +{re.escape(entry.command)} ", output,
                         re.MULTILINE), entry.name
    table = rows(output)
    assert re.match(r"MFR_PG_FSYNC_OFF +false +up, demo +For tests only: run the embedded "
                    r"PostgreSQL with `fsync=off`", table["MFR_PG_FSYNC_OFF"])
    assert re.match(r"MFR_LOG_LEVEL +INFO +every `mfr serve` process +Python logging level",
                    table["MFR_LOG_LEVEL"])
    assert re.match(r"MFR_DB_POOL_TIMEOUT_S +30\.0; gateway: 5\.0 ", table["MFR_DB_POOL_TIMEOUT_S"])


def test_the_cli_s_own_variables_are_listed():
    client = rows(mfr_config("client"))
    assert re.match(r"MFR_GATEWAY +str +http://127\.0\.0\.1:8000 ", client["MFR_GATEWAY"])
    assert re.match(r"MFR_TOKEN +secret +unset \(secret\) ", client["MFR_TOKEN"])
    assert re.match(r"MFR_CONFIG_DIR +path +~/\.config/mfr ", client["MFR_CONFIG_DIR"])
    up = rows(mfr_config("up"))
    assert {"MFR_CACHE_DIR", "MFR_PG_FSYNC_OFF", "MFR_SCORER_THREADS", "MFR_EMBEDDER_THREADS",
            "MFR_ADMIN_TOKEN", "MFR_SERVICE_TOKEN", "MFR_BUCKET_PREFIX", "MFR_DATABASE_URL",
            "MFR_S3_ENDPOINT", "MFR_S3_ACCESS_KEY", "MFR_S3_SECRET_KEY"} == set(up)
    fsync = next(row for row in combined() if row.name == "MFR_PG_FSYNC_OFF").meaning
    assert "tests only" in fsync and "crash" in fsync


def test_json_is_one_document():
    everything = json.loads(mfr_config("--json"))
    assert [p["name"] for p in everything["processes"]] == [p.name for p in PROCESSES]
    one = json.loads(mfr_config("scorer-worker", "--json"))
    assert one["command"] == "mfr serve scorer-worker"
    tiles = next(v for v in one["variables"] if v["name"] == "MFR_SCORER_FLOORS")
    assert tiles["default"] == {} and tiles["type"] == "JSON object"


def test_markdown_is_for_every_process_only():
    result = CliRunner().invoke(cli, ["config", "ranker", "--markdown"])
    assert result.exit_code == 2 and "--markdown prints every process" in result.output
    result = CliRunner().invoke(cli, ["config", "no-such-process"])
    assert result.exit_code == 2


@pytest.mark.parametrize("entry", PROCESSES, ids=lambda p: p.name)
def test_every_variable_has_a_meaning(entry):
    silent = [v.name for v in variables(entry.settings_class()) if not v.meaning]
    assert silent == [], f"give these fields a docstring in {entry.settings}"


def test_every_mfr_serve_process_is_listed_with_the_class_its_main_reads():
    listed = {p.name: p for p in PROCESSES if p.command.startswith("mfr serve")}
    assert set(listed) == set(ENTRY_POINTS)
    for name, module in ENTRY_POINTS.items():
        server = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        class_name = listed[name].settings.split(":")[1]
        assert re.search(rf"serve\([^,]+, {class_name}\b", server), name


def test_the_cli_reads_no_mfr_variable_by_itself():
    """Through its settings classes only (cli/settings.py), so that `mfr config` shows it."""
    reads = re.compile(r"""(environ(\.get)?\s*[\[(]|getenv\()\s*["']MFR_""")
    found = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "cli").rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if reads.search(line)]
    assert found == []


def test_every_variable_the_manifests_set_is_one_a_process_reads():
    """Settings ignore unknown variables: a misspelt one in k8s/ would be silently lost."""
    known = {row.name for row in combined()}
    unknown = {f"{path.relative_to(ROOT)}: {name}" for path in (ROOT / "k8s").rglob("*.yaml")
               for name in re.findall(r"\b(MFR_[A-Z0-9_]+)", path.read_text())
               if name not in known}
    assert unknown == set()
