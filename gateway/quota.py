"""The daily submission limit and the submission window.

A day is a calendar day of the challenge's time zone (``timezone`` in its
TOML, UTC unless set). Every submission of the day counts against the limit
except those the validator rejected (a broken zip should not cost a slot) and
those that failed for a platform reason (:mod:`mfr.faults`); one the model made
fail, or an organiser cancelled, still counts. Rejected uploads are free but
limited on their own (``daily_rejected_limit``, 429 ``rejected_limit``), so a
participant cannot keep the validator busy with models that never pass.
Baselines, which organisers publish, are exempt from the limits and the window.

Race-free: :func:`reserve` runs inside the transaction that inserts the
submission and first locks the participant's row, so concurrent uploads of one
participant are counted one after the other and never both take the last slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from gateway.errors import HttpError, WindowClosed
from mfr.challenge import Challenge
from mfr.records import participants, submissions


@dataclass(frozen=True)
class Quota:
    limit: int
    used: int
    day: date
    resets_at: datetime
    rejected: int = 0
    rejected_limit: int = 0

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def to_json(self) -> dict:
        return {"limit": self.limit, "used": self.used, "remaining": self.remaining,
                "resets_at": self.resets_at.isoformat(), "day": self.day.isoformat(),
                "rejected": self.rejected, "rejected_limit": self.rejected_limit}


def quota_day(challenge: Challenge, now: datetime) -> date:
    return now.astimezone(challenge.tz).date()


def resets_at(challenge: Challenge, now: datetime) -> datetime:
    """The next midnight of the challenge's time zone, in UTC."""
    tomorrow = quota_day(challenge, now) + timedelta(days=1)
    return datetime.combine(tomorrow, time(0), tzinfo=challenge.tz).astimezone(UTC)


def quota(conn, challenge: Challenge, participant_id: str, now: datetime) -> Quota:
    day = quota_day(challenge, now)
    counts = submissions.count_for_day(conn, challenge.id, participant_id, day)
    return Quota(challenge.daily_submission_limit, counts["counted"], day,
                 resets_at(challenge, now), counts["rejected"], challenge.daily_rejected_limit)


def exceeded(q: Quota, now: datetime) -> HttpError:
    retry = max(1, int((q.resets_at - now).total_seconds()))
    return HttpError(429, "daily_limit",
                     f"{q.used} of {q.limit} submissions used today ({q.day}); the limit resets "
                     f"at {q.resets_at.isoformat()}",
                     extra={"resets_at": q.resets_at.isoformat(), "limit": q.limit,
                            "used": q.used, "remaining": 0},
                     headers={"Retry-After": str(retry)})


def rejected_exceeded(q: Quota, now: datetime) -> HttpError:
    retry = max(1, int((q.resets_at - now).total_seconds()))
    return HttpError(429, "rejected_limit",
                     f"{q.rejected} uploads were rejected by validation today ({q.day}), the "
                     f"most a day allows; check models with `mfr validate` first. The limit "
                     f"resets at {q.resets_at.isoformat()}",
                     extra={"resets_at": q.resets_at.isoformat(), "rejected": q.rejected,
                            "rejected_limit": q.rejected_limit},
                     headers={"Retry-After": str(retry)})


def check(conn, challenge: Challenge, participant_id: str, now: datetime) -> Quota:
    """The quota now; raises 429 when nothing is left (or too many uploads were rejected)."""
    q = quota(conn, challenge, participant_id, now)
    if q.remaining <= 0:
        raise exceeded(q, now)
    if q.rejected >= q.rejected_limit:
        raise rejected_exceeded(q, now)
    return q


def reserve(conn, challenge: Challenge, participant_id: str, now: datetime) -> Quota:
    """Inside the inserting transaction: lock the participant, then count (see module doc)."""
    participants.lock(conn, participant_id)
    return check(conn, challenge, participant_id, now)


def check_window(challenge: Challenge, now: datetime) -> None:
    if challenge.opens and now < challenge.opens:
        raise WindowClosed(f"submissions open at {challenge.opens.isoformat()}")
    if challenge.closes and now >= challenge.closes:
        raise WindowClosed(f"submissions closed at {challenge.closes.isoformat()}")
