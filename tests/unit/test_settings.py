"""Settings from the environment: an empty variable counts as unset, everywhere."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mfr.settings import AdminSettings, ChallengeSettings, TestSetSettings, config_problem


def test_an_empty_path_variable_is_unset_not_the_current_directory(monkeypatch):
    monkeypatch.setenv("MFR_CHALLENGE", "")
    monkeypatch.setenv("MFR_TESTSET", "")
    assert ChallengeSettings().challenge is None
    assert TestSetSettings().testset is None


def test_an_empty_secret_is_reported_as_not_set(monkeypatch):
    monkeypatch.setenv("MFR_ADMIN_TOKEN", "")
    with pytest.raises(ValidationError) as caught:
        AdminSettings()
    assert config_problem(caught.value) == "MFR_ADMIN_TOKEN is not set"


def test_a_set_path_variable_is_read(monkeypatch, tmp_path):
    monkeypatch.setenv("MFR_CHALLENGE", str(tmp_path / "c.toml"))
    assert ChallengeSettings().challenge == tmp_path / "c.toml"
