"""``mfr up`` makes its credentials once per state directory, the service token included."""

from __future__ import annotations

import json
import stat

from cli.stack.supervisor import Stack, StackConfig


def _secrets(state_dir):
    return Stack(StackConfig(state_dir=state_dir), say=lambda _line: None)._secrets()


def test_credentials_are_made_once_and_kept(tmp_path):
    first = _secrets(tmp_path)
    assert set(first) == {"s3_access_key", "s3_secret_key", "admin_token", "service_token"}
    assert len(first["service_token"]) >= 16  # what MFR_SERVICE_TOKEN requires
    assert first["service_token"] != first["admin_token"]
    assert _secrets(tmp_path) == first
    assert stat.S_IMODE((tmp_path / "credentials.json").stat().st_mode) == 0o600


def test_a_state_directory_from_before_the_service_token_gets_one_and_keeps_the_rest(tmp_path):
    older = {"s3_access_key": "mfr0123", "s3_secret_key": "s" * 32, "admin_token": "a" * 32}
    (tmp_path / "credentials.json").write_text(json.dumps(older))
    values = _secrets(tmp_path)
    assert {k: values[k] for k in older} == older  # SeaweedFS was set up with these keys
    assert len(values["service_token"]) >= 16
    assert json.loads((tmp_path / "credentials.json").read_text()) == values
