"""Readiness checks are bounded: a frozen dependency fails the check, it never hangs it."""

from __future__ import annotations

import threading
import time

from mfr.health import Readiness


def test_a_check_that_never_answers_fails_within_the_bound_and_is_not_started_twice():
    frozen = threading.Event()
    calls = []

    def stuck() -> bool:
        calls.append(1)
        frozen.wait(30)
        return True

    readiness = Readiness({"postgres": stuck, "s3": lambda: True}, timeout_s=0.3)
    started = time.monotonic()
    first = readiness.check()
    second = readiness.check()
    assert time.monotonic() - started < 5  # two rounds of 0.3 s, with room for a slow machine
    assert first.failing == second.failing == {"postgres": "no answer within 0.3 s"}
    assert len(calls) == 1  # the second round joined the first's call
    frozen.set()
    assert _eventually(lambda: readiness.check().ready)


def test_the_verdict_names_each_failing_check_with_its_reason():
    def refused() -> bool:
        raise ConnectionRefusedError("connection refused")

    verdict = Readiness({"postgres": refused, "s3": lambda: True,
                         "testset-upload": lambda: False}).check()
    assert not verdict.ready
    assert verdict.failing == {"postgres": "connection refused", "testset-upload": "not ready yet"}


def test_latest_reuses_a_recent_verdict_and_checks_again_once_it_is_old():
    answers = iter([True, False])
    readiness = Readiness({"postgres": lambda: next(answers)})
    assert readiness.latest(max_age_s=60).ready
    assert readiness.latest(max_age_s=60).ready  # the same verdict: not checked again
    assert not readiness.latest(max_age_s=0).ready


def _eventually(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
