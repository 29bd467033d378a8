"""Bearer tokens: made once at sign-up, shown once, stored as their SHA-256 only.

A token has 256 random bits, so a plain (unsalted) SHA-256 is enough to make a
stolen table useless and lets the lookup be one indexed equality.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.context import Context
from gateway.errors import Unauthorized
from mfr.errors import PermissionDenied
from mfr.records import participants
from mfr.records.participants import Participant

TOKEN_PREFIX = "mfr_"
bearer = HTTPBearer(auto_error=False, description="The token `mfr signup` printed once.")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def context(request: Request) -> Context:
    return request.app.state.context


Ctx = Annotated[Context, Depends(context)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def optional_participant(credentials: Credentials, ctx: Ctx) -> Participant | None:
    if credentials is None:
        return None
    participant = participants.by_token_hash(ctx.pool, token_hash(credentials.credentials))
    if participant is None:
        raise Unauthorized("unknown token; sign up with `mfr signup` or check MFR_TOKEN")
    return participant


MaybeParticipant = Annotated[Participant | None, Depends(optional_participant)]


def participant(found: MaybeParticipant) -> Participant:
    if found is None:
        raise Unauthorized("this call needs `Authorization: Bearer TOKEN` (the sign-up token)")
    return found


def organiser(credentials: Credentials, ctx: Ctx) -> None:
    if credentials is None:
        raise Unauthorized("this call needs the organisers' token (MFR_ADMIN_TOKEN)")
    # Bytes, not str: compare_digest raises TypeError on a non-ASCII str (a 500, not a 403).
    if not ctx.admin_token or not hmac.compare_digest(credentials.credentials.encode("utf-8"),
                                                      ctx.admin_token.encode("utf-8")):
        raise PermissionDenied("organisers only: the token is not MFR_ADMIN_TOKEN",
                               code="not_organiser")


CurrentParticipant = Annotated[Participant, Depends(participant)]
