"""Which challenge a running stack serves: ``MFR_CHALLENGE`` (a TOML path) or the built-in one."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from mfr.challenge import BUILTIN_CHALLENGE, Challenge, load_challenge


def serving_challenge() -> tuple[Challenge, str]:
    """The challenge and its TOML text (the validator and scorer get the text over gRPC)."""
    path = os.environ.get("MFR_CHALLENGE")
    if path:
        return load_challenge(path), Path(path).read_text("utf-8")
    text = resources.files("mfr.builtin").joinpath(BUILTIN_CHALLENGE).read_text("utf-8")
    return load_challenge(), text
