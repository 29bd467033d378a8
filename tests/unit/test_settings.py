"""Settings from the environment: an empty variable counts as unset, everywhere."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mfr.settings import (
    AdminSettings,
    ChallengeSettings,
    ServiceTokenSettings,
    TestSetSettings,
    config_problem,
)


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


def test_the_service_token_is_required_and_not_short(monkeypatch):
    monkeypatch.setenv("MFR_SERVICE_TOKEN", "")
    with pytest.raises(ValidationError) as caught:
        ServiceTokenSettings()
    assert config_problem(caught.value) == "MFR_SERVICE_TOKEN is not set"
    monkeypatch.setenv("MFR_SERVICE_TOKEN", "short")
    with pytest.raises(ValidationError) as caught:
        ServiceTokenSettings()
    assert config_problem(caught.value).startswith("MFR_SERVICE_TOKEN: ")


def test_only_processes_with_a_grpc_port_hold_the_service_token():
    from gateway.config import GatewaySettings
    from services.dispatcher.config import DispatcherSettings
    from services.embedder.config import EmbedderSettings, EmbedderWorkerSettings
    from services.ranker.config import RankerSettings
    from services.scorer.config import ScorerSettings, ScorerWorkerSettings
    from services.validator.config import ValidatorSettings

    for settings in (ValidatorSettings, EmbedderSettings, EmbedderWorkerSettings, ScorerSettings,
                     ScorerWorkerSettings, RankerSettings, DispatcherSettings):
        assert issubclass(settings, ServiceTokenSettings), settings.__name__
    # The public-facing gateway calls no service: a compromised gateway does not get it.
    assert "service_token" not in GatewaySettings.model_fields


def test_a_set_path_variable_is_read(monkeypatch, tmp_path):
    monkeypatch.setenv("MFR_CHALLENGE", str(tmp_path / "c.toml"))
    assert ChallengeSettings().challenge == tmp_path / "c.toml"
