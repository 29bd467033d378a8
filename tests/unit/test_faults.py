"""Model faults against platform faults: the families, their docs, and the challenge's limit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mfr.challenge import challenge_from_text, load_challenge, served_challenge
from mfr.errors import InvalidInput
from mfr.faults import MODEL_FAULTS, PLATFORM_FAULTS, is_model_fault

DOCS = Path(__file__).resolve().parents[2] / "docs" / "participants.md"


def _row(family: str) -> set[str]:
    line = next(line for line in DOCS.read_text().splitlines()
                if line.startswith(f"| the {family}'s |"))
    return set(re.findall(r"`([a-z_]+)`", line.split("|")[2]))


def test_the_participants_doc_lists_each_family_exactly():
    assert _row("model") == set(MODEL_FAULTS)
    assert _row("platform") - {"MFR_DISPATCH_PLATFORM_RETRIES"} == set(PLATFORM_FAULTS)


def test_unknown_codes_are_the_platforms():
    assert not set(MODEL_FAULTS) & set(PLATFORM_FAULTS)
    assert is_model_fault("embed_timeout") and not is_model_fault("tile_failed")
    assert not is_model_fault("something_new")  # never costs a slot by accident


def test_the_daily_rejected_limit_is_read_and_checked():
    assert load_challenge().daily_rejected_limit == 10
    text = served_challenge()[1]
    limit = "daily_submission_limit = 3"
    assert limit in text
    custom = challenge_from_text(text.replace(limit, f"{limit}\ndaily_rejected_limit = 4"), "t")
    assert custom.daily_rejected_limit == 4
    with pytest.raises(InvalidInput) as err:
        challenge_from_text(text.replace(limit, f"{limit}\ndaily_rejected_limit = 0"), "t")
    assert err.value.code == "challenge_invalid" and "daily_rejected_limit" in err.value.message
