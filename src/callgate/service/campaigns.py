"""Outbound campaigns on the gate's API, from their state files (``serve --campaigns``).

``callgate dial`` keeps a campaign's state in a SQLite file; ``callgate serve --campaigns
FILE.db`` (repeatable) lets the gate share it without any binding in memory
(:mod:`callgate.dialer.shared`):

    GET  /v1/campaigns                 every campaign this token may see, with its progress
    GET  /v1/campaigns/{name}          one campaign (the terminal view's numbers)
    POST /v1/campaigns/{name}/optout   the callee asked not to be called again (the agent)

and the webhooks append what they learn about a campaign's call to its file: the callee
answered (``/twilio/outbound``), the agent started (its first ``/v1/calls/{id}/renew``),
the final status (``/twilio/status``, with ``AnsweredBy``). An account token sees and
changes only its own account's campaigns; another's answers like one that does not exist.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from callgate.config import E164
from callgate.dialer.shared import StateFile, campaign_of
from callgate.service.auth import Principal, principal_of
from callgate.service.openapi_docs import SECURED, route_errors

log = logging.getLogger("callgate.campaigns")
_E164 = re.compile(E164)


class Campaigns:
    """The state files the gate was given, found by campaign name (read at each use, so a
    file the dialler binds after the gate started is found)."""

    def __init__(self, paths: Sequence[str | Path] = ()) -> None:
        self.files = [StateFile(path) for path in paths]

    def __bool__(self) -> bool:
        return bool(self.files)

    def named(self, name: str) -> StateFile | None:
        for file in self.files:
            if file.meta().get("campaign") == name:
                return file
        return None

    def record(self, call_id: str, kind: str, **facts: str | None) -> None:
        """Append a fact about ``call_id`` to its campaign's file (nothing for other ids)."""
        name = campaign_of(call_id)
        file = self.named(name) if name and self.files else None
        if file is None:
            return
        try:
            file.record(call_id, kind, time.time(), **facts)
        except Exception:  # a webhook's answer must not fail because the file is busy
            log.exception("could not record %s for call %s in %s", kind, call_id, file.path)

    async def arecord(self, call_id: str, kind: str, **facts: str | None) -> None:
        if self.files and campaign_of(call_id):
            await anyio.to_thread.run_sync(lambda: self.record(call_id, kind, **facts))


class CampaignOut(BaseModel):
    """A campaign's progress: contacts by status, tries by result, what holds it back."""

    name: str
    account: str | None
    runs: int
    contacts: int
    pending: int
    placed: int
    unknown: int
    skipped: int
    tries_by_result: dict[str, int]
    opted_out: int
    paused: str | None = Field(description="Why dialling is paused (abandonment), or null.")
    abandonment: dict[str, Any] | None
    in_call: int
    waiting_window: int
    outside_hours: int
    per_number_last_hour: dict[str, int]
    holding: str | None
    eta_s: float | None
    running: bool = Field(description="Whether a dialler wrote this view and still runs.")
    updated_at: float | None = Field(description="When the dialler last wrote its view.")


class CampaignsOut(BaseModel):
    campaigns: list[CampaignOut]


class OptOutRequest(BaseModel):
    """Who asked not to be called again: the call's id (the agent has it), or the number."""

    model_config = ConfigDict(extra="forbid")
    call_id: str | None = Field(default=None, min_length=1, max_length=256)
    phone: str | None = Field(default=None, pattern=E164,
                              description='E.164: "+" then up to 15 digits')

    @model_validator(mode="after")
    def _one(self) -> OptOutRequest:
        if self.call_id is None and self.phone is None:
            raise ValueError("give call_id (the call the agent is on) or phone (E.164)")
        return self


class OptOutOut(BaseModel):
    campaign: str
    phone: str
    added: bool = Field(description="False when the number was already opted out.")


def campaigns_router(campaigns: Campaigns) -> APIRouter:
    from callgate.service.errors import ApiError

    router = APIRouter(tags=["campaigns"])

    def visible(principal: Principal, document: dict[str, Any] | None) -> bool:
        return document is not None and (principal.account is None
                                         or document["account"] == principal.account)

    def unknown(name: str) -> ApiError:
        return ApiError(404, {"detail": f"no campaign {name!r} among this gate's --campaigns "
                                        "files (or not this token's account)",
                              "error": "unknown_campaign"})

    def read_all(principal: Principal) -> list[dict[str, Any]]:
        documents = [file.progress() for file in campaigns.files]
        return [d for d in documents if d is not None and visible(principal, d)]

    @router.get("/v1/campaigns", openapi_extra=SECURED, response_model=CampaignsOut,
                responses=route_errors("GET", "/v1/campaigns"))
    async def list_campaigns(request: Request) -> dict[str, Any]:
        """Every campaign of ``serve --campaigns`` this token's account owns (admin: all)."""
        principal = principal_of(request)
        return {"campaigns": await anyio.to_thread.run_sync(read_all, principal)}

    def read_one(principal: Principal, name: str) -> dict[str, Any]:
        file = campaigns.named(name)
        document = None if file is None else file.progress()
        if document is None or not visible(principal, document):
            raise unknown(name)
        return document

    @router.get("/v1/campaigns/{name}", openapi_extra=SECURED, response_model=CampaignOut,
                responses=route_errors("GET", "/v1/campaigns/{name}"))
    async def one_campaign(name: str, request: Request) -> dict[str, Any]:
        """One campaign's progress: the numbers ``callgate dial``'s view shows."""
        return await anyio.to_thread.run_sync(read_one, principal_of(request), name)

    def opt_out(principal: Principal, name: str, body: OptOutRequest) -> dict[str, Any]:
        file = campaigns.named(name)
        meta = {} if file is None else file.meta()
        if file is None or (principal.account is not None
                            and meta.get("account") != principal.account):
            raise unknown(name)
        phone = body.phone
        if body.call_id is not None:
            called = file.phone_of(body.call_id)
            if called is None:
                raise ApiError(422, {"detail": [{
                    "field": "body.call_id", "value": body.call_id,
                    "message": f"campaign {name!r} placed no call with this id"}],
                    "error": "invalid request"})
            if phone is not None and phone != called:
                raise ApiError(422, {"detail": [{
                    "field": "body.phone", "value": phone,
                    "message": f"call {body.call_id!r} went to another number"}],
                    "error": "invalid request"})
            phone = called
        assert phone is not None
        added = file.opt_out(phone, time.time(), body.call_id)
        log.info("campaign %s: %s opted out (%s)", name, phone,
                 "added" if added else "already on the list")
        return {"campaign": name, "phone": phone, "added": added}

    @router.post("/v1/campaigns/{name}/optout", openapi_extra=SECURED,
                 response_model=OptOutOut,
                 responses=route_errors("POST", "/v1/campaigns/{name}/optout"))
    async def optout(name: str, body: OptOutRequest, request: Request) -> dict[str, Any]:
        """The callee asked not to be called again: the dialler skips the number from now on."""
        principal = principal_of(request)
        return await anyio.to_thread.run_sync(opt_out, principal, name, body)

    return router
