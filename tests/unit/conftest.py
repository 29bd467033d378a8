"""Fixtures of the unit tier: rendering the Kubernetes manifests (tests/unit/k8s_support.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.unit.k8s_support import RENDERINGS, _rendered_text


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kustomize")


@pytest.fixture(scope="session")
def render(scratch: Path):
    def render(name: str) -> list[dict]:
        return [doc for doc in yaml.safe_load_all(_rendered_text(name, scratch)) if doc]
    return render


@pytest.fixture(params=sorted(RENDERINGS))
def rendering(request, render) -> tuple[str, list[dict]]:
    """(name, documents) of every rendering in turn."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    return request.param, render(request.param)
