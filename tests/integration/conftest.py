"""Fixtures of the integration tier that more than one test module uses."""

from tests.integration.embedder_support import (  # noqa: F401 - fixtures, used by name
    embedding,
    good_reference,
    small_testset,
)
