"""The whole stack for the journey tests: what it needs, and a skip reason when a service is missing."""

from __future__ import annotations

from importlib.util import find_spec

# Services other engineers deliver; the journey needs all of them for real.
REQUIRED = {
    "services.validator.server": "the validator service",
    "services.embedder.server": "the embedder service",
    "services.scorer.servicer": "the scorer's job API (SubmitJob/WatchJob)",
    "services.scorer.worker.server": "the scorer workers",
}


def missing_services() -> list[str]:
    missing = []
    for module, what in REQUIRED.items():
        try:
            found = find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(f"{what} ({module})")
    return missing


def skip_reason() -> str | None:
    missing = missing_services()
    if missing:
        return "the whole stack is not built yet: missing " + ", ".join(missing)
    return None
