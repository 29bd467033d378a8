"""``/v1/participants``: sign up (the token is shown once), read and update yourself."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from gateway.auth import Ctx, CurrentParticipant, new_token, token_hash
from gateway.characters import Printable
from gateway.context import Context
from gateway.errors import documented
from mfr.records import participants

router = APIRouter(prefix="/v1/participants", tags=["participants"])


class SignUp(BaseModel):
    # Names end up on the web page, in CSV files and in terminals: Printable (no control
    # characters) as well as bounded.
    name: Printable = Field(min_length=1, max_length=200, description="Shown on the leaderboard.")
    organisation: Printable = Field("", max_length=200, description="Please give the real one.")
    hide_organisation: bool = Field(False, description="Keep the organisation off the leaderboard.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class Update(BaseModel):
    organisation: Printable | None = Field(None, max_length=200)
    hide_organisation: bool | None = None


class Created(BaseModel):
    id: str
    token: str = Field(description="Shown once; only its SHA-256 is stored.")


def create_participant(ctx: Context, body: SignUp, baseline: bool = False) -> Created:
    token = new_token()
    participant_id = participants.create(ctx.pool, body.name.strip(), body.organisation.strip(),
                                         body.hide_organisation, baseline, token_hash(token))
    return Created(id=participant_id, token=token)


@router.post("", status_code=201, response_model=Created, summary="Sign up",
             responses=documented(409))
def sign_up(body: SignUp, ctx: Ctx) -> JSONResponse:
    created = create_participant(ctx, body)
    return JSONResponse(created.model_dump(), 201)


@router.get("/me", summary="Who the token belongs to", responses=documented(401))
def me(who: CurrentParticipant) -> dict:
    return who.to_json()


@router.patch("/me", summary="Change the organisation or hide it", responses=documented(401))
def update_me(body: Update, who: CurrentParticipant, ctx: Ctx) -> dict:
    organisation = who.organisation if body.organisation is None else body.organisation.strip()
    hide = who.hide_organisation if body.hide_organisation is None else body.hide_organisation
    participants.set_organisation(ctx.pool, who.id, organisation, hide)
    return {**who.to_json(), "organisation": organisation, "hide_organisation": hide}
