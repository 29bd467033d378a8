"""The validator's pod fits the validations it runs at once (docs/validation.md)."""

from __future__ import annotations

from tests.unit.k8s_support import _env, _named, _pod_spec

UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


def _bytes(quantity: str) -> int:
    return int(quantity[:-2]) * UNITS[quantity[-2:]] if quantity[-2:] in UNITS else int(quantity)


def test_every_concurrent_child_fits_in_the_validators_memory_and_cores(rendering) -> None:
    name, docs = rendering
    container = _pod_spec(_named(docs, "Deployment")["validator"])["containers"][0]
    env = _env(container, docs)
    limits = container["resources"]["limits"]
    concurrency = int(env["MFR_VALIDATOR_CONCURRENCY"])
    assert concurrency >= 2, name  # one hanging model must not hold every validation
    # Each child may reach its address-space limit, all at once, and the service needs room.
    children = concurrency * int(env["MFR_VALIDATOR_MEMORY_MB"]) * (1 << 20)
    assert children + (512 << 20) <= _bytes(limits["memory"]), name
    # The automatic thread count (CPU limit // concurrency) gives each at least a core.
    assert int(limits["cpu"]) // concurrency >= 1, name
