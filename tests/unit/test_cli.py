"""The ``mfr`` command: every registered command loads and has --help."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from cli.main import COMMANDS, cli


def test_help_lists_the_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("up", "serve", "db"):
        assert name in result.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_registered_command_has_help(name):
    command = cli.get_command(None, name)
    assert command is not None, f"mfr {name} is registered but its module is missing"
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_console_script_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "cli.main", "--version"],
                         capture_output=True, text=True, check=True)
    assert "0.1.0" in out.stdout


def test_mfr_score_needs_neither_pydantic_nor_the_services_stack():
    """`mfr score` runs where only numpy (and click) are installed, e.g. a GPU box."""
    code = (
        "import sys\n"
        "for name in ('pydantic', 'pydantic_settings', 'grpc', 'psycopg', 'minio'):\n"
        "    sys.modules[name] = None\n"
        "from cli.main import cli\n"
        "cli(['score', '--help'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "--features" in done.stdout
