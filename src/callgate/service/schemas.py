"""The HTTP API's request and response bodies (pydantic; they shape the OpenAPI at ``/docs``).

Requests forbid unknown fields, so a misspelt ``priorty`` is a 422 naming it rather than
a silently ignored default. Times are epoch seconds (``expires_at``, ``cooldown_until``);
durations are seconds and say so (``ttl_s``, ``retry_after_s``, ``estimated_wait_s``).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, WithJsonSchema

from callgate.config import E164
from callgate.model import (
    ATTEMPT_MAX,
    CALL_ID_MAX_BYTES,
    PRIORITY_MAX,
    PRIORITY_MIN,
    REMOTE_MAX_BYTES,
    Call,
    Decision,
    Lease,
    RenewStatus,
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


_VISIBLE_ASCII = re.compile(r"[!-~]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_E164 = re.compile(E164)


def _call_id(value: str) -> str:
    if not 1 <= len(value) <= CALL_ID_MAX_BYTES or not _VISIBLE_ASCII.fullmatch(value):
        raise ValueError(f"expected 1 to {CALL_ID_MAX_BYTES} visible ASCII characters "
                         "(0x21-0x7E: letters, digits and punctuation; no spaces)")
    return value


def _remote(value: str) -> str:
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, from a JSON "\ud800" escape
        raise ValueError("expected valid Unicode text") from None
    if size > REMOTE_MAX_BYTES:
        raise ValueError(f"expected at most {REMOTE_MAX_BYTES} bytes in UTF-8, got {size}")
    if _CONTROL.search(value):
        raise ValueError("expected no control characters")
    return value


def _number(value: str) -> str:
    if not _E164.match(value):
        raise ValueError('expected an E.164 number: "+" then up to 15 digits, '
                         'e.g. "+14155550100"')
    return value


CallId = Annotated[str, AfterValidator(_call_id), WithJsonSchema(
    {"type": "string", "pattern": f"^[!-~]{{1,{CALL_ID_MAX_BYTES}}}$",
     "minLength": 1, "maxLength": CALL_ID_MAX_BYTES})]
Remote = Annotated[str, AfterValidator(_remote), WithJsonSchema(
    {"type": "string", "maxLength": REMOTE_MAX_BYTES,
     "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"})]
Number = Annotated[str, AfterValidator(_number), WithJsonSchema(
    {"type": "string", "pattern": E164})]
Units = Annotated[int, Field(ge=0, le=PRIORITY_MAX, strict=True)]


class CallRequest(_Request):
    """May this call start now? Send the same body again to poll a queued call.

    The bounds below are the API's, for every route that serves ``POST /v1/calls``; a body
    beyond one is a 422 naming the field, and the whole body is at most 64 KiB (else 413).
    """

    call_id: CallId = Field(description=f"Your id for the call, unique per account: 1 to "
                                        f"{CALL_ID_MAX_BYTES} visible ASCII characters "
                                        "(0x21-0x7E).")
    direction: Literal["inbound", "outbound"]
    number: Number = Field(description="Our number (dialled, or the caller id), E.164.")
    remote: Remote | None = Field(
        default=None, description=f"The other party's number: at most {REMOTE_MAX_BYTES} "
                                  "bytes of UTF-8, no control characters.")
    priority: int = Field(default=0, ge=PRIORITY_MIN, le=PRIORITY_MAX, strict=True,
                          description="Higher is served first in the queue (a 32-bit integer).")
    attempt: int = Field(default=1, ge=1, le=ATTEMPT_MAX, strict=True,
                         description="Outbound: 1 for the first try, then 2...")
    providers: list[str] | None = Field(
        default=None, description="Provider pools this call needs (replaces the stack's set)."
    )
    resources: dict[str, Units] | None = Field(
        default=None, description="Units of each resource this call needs (replaces per_call)."
    )
    ttl_s: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="The lease's TTL in seconds (capped at max_call_duration). Default: "
                    "lease_ttl, and for an outbound call dial_ttl until its first renew.",
    )

    def to_call(self) -> Call:
        return Call(
            call_id=self.call_id, direction=self.direction, number=self.number,
            remote=self.remote, priority=self.priority, attempt=self.attempt,
            providers=None if self.providers is None else tuple(self.providers),
            resources=self.resources,
        )


class LeaseOut(BaseModel):
    """An admitted call's lease: renew it before ``expires_at`` (epoch seconds)."""

    account: str
    expires_at: float
    ttl_s: float
    admitted_at: float
    keys: dict[str, str] = Field(description="The key alias chosen in each provider pool.")

    @classmethod
    def of(cls, lease: Lease) -> LeaseOut:
        return cls(account=lease.account, expires_at=lease.expires_at, ttl_s=lease.ttl_s,
                   admitted_at=lease.admitted_at, keys=dict(lease.keys))


class QueueOut(BaseModel):
    position: int = Field(description="1 = next on this number.")
    estimated_wait_s: float


class DecisionOut(BaseModel):
    """The answer to a call; every outcome, refusals included, is an HTTP 200."""

    call_id: str
    decision: Literal["admitted", "queued", "retry_later", "rejected"]
    layer: str | None
    scope: str | None
    reason: str
    lease: LeaseOut | None
    queue: QueueOut | None
    retry_after_s: float | None
    message: str | None

    @staticmethod
    def document(decision: Decision) -> dict[str, Any]:
        """The same answer as a plain dict, shaped exactly like this model.

        The hot route returns it directly: building and validating the model costs more
        than the decision itself (the model stays the documented response schema).
        """
        lease, queue = decision.lease, decision.queue
        return {
            "call_id": decision.call_id, "decision": decision.outcome.value,
            "layer": None if decision.layer is None else decision.layer.value,
            "scope": decision.scope, "reason": decision.reason.value,
            "lease": None if lease is None else {
                "account": lease.account, "expires_at": lease.expires_at,
                "ttl_s": lease.ttl_s, "admitted_at": lease.admitted_at,
                "keys": dict(lease.keys)},
            "queue": None if queue is None else {
                "position": queue.position, "estimated_wait_s": queue.estimated_wait_s},
            "retry_after_s": decision.retry_after_s, "message": decision.message,
        }


def retry_after_header(retry_after_s: float | None) -> str | None:
    """``Retry-After`` in whole seconds, rounded up (None when there is nothing to wait)."""
    if retry_after_s is None:
        return None
    return str(max(0, math.ceil(retry_after_s)))


class RenewOut(BaseModel):
    call_id: str
    lease: LeaseOut


class RenewRefusal(BaseModel):
    """Why a lease cannot be renewed; the agent must stop using the slots."""

    detail: str
    status: Literal["unknown", "expired", "ended", "queued"]

    @classmethod
    def of(cls, call_id: str, status: RenewStatus) -> RenewRefusal:
        reacquire = "re-acquire with POST /v1/calls before carrying on (a new call id)"
        details = {
            RenewStatus.UNKNOWN: f"call {call_id!r} holds no lease (never admitted, or ended "
                                 f"long ago); {reacquire}",
            RenewStatus.EXPIRED: f"the lease of call {call_id!r} expired (not renewed within its "
                                 f"ttl_s) and its slots were freed; {reacquire}",
            RenewStatus.ENDED: f"call {call_id!r} was released or cancelled; {reacquire}",
            RenewStatus.QUEUED: f"call {call_id!r} is queued, not admitted: keep polling "
                                "POST /v1/calls with the same body until it is admitted",
        }
        return cls.model_validate({"detail": details[status], "status": status.value})


class ReleaseOut(BaseModel):
    released: bool = Field(description="A lease was freed.")
    cancelled: bool = Field(description="A queued call was taken out of its queue.")


class ProviderErrorRequest(_Request):
    """A provider answered ``status`` for one key (429 or 5xx cools it; 401/403 disable it)."""

    status: int = Field(ge=100, le=599)
    retry_after_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class ProviderErrorOut(BaseModel):
    provider: str
    key: str
    cooldown_until: float | None = Field(
        description="Epoch seconds; null = disabled until the stack is reloaded."
    )


class ReloadOut(BaseModel):
    reloaded: bool
    layers: int = Field(description="Capped scopes now enforced (rows of /v1/usage layers).")


class SettingsOut(BaseModel):
    """The lease timings of the running stack, in seconds (what a client needs to heartbeat)."""

    lease_ttl_s: float = Field(description="A lease not renewed within this expires.")
    dial_ttl_s: float = Field(description="An outbound lease's first TTL: the ring time.")
    webhook_lease_ttl_s: float = Field(description="TTL of a lease a voice webhook took.")
    max_call_duration_s: float = Field(description="No lease lives longer.")


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready"]
    store: str


# error answers --------------------------------------------------------------------------
class FieldProblem(BaseModel):
    field: str = Field(description="Where: body.call_id, query.ttl_s, ...")
    value: Any = Field(description="What was sent (cut short past 256 characters).")
    message: str = Field(description="What is accepted.")


class InvalidRequestOut(BaseModel):
    """422: a field is missing, unknown or out of bounds; nothing was changed."""

    detail: list[FieldProblem]
    error: Literal["invalid request"]


class ErrorOut(BaseModel):
    """A request the API refuses: ``detail`` says why, ``error`` is a stable code."""

    detail: str
    error: str = Field(description="unknown_number, call_conflict, unknown_provider, "
                                   "no_config, forbidden, missing_token, invalid_token, "
                                   "bad_request, not_found, method_not_allowed, internal")


class TooLargeOut(BaseModel):
    """413: the request body is over the limit; it was not read."""

    error: Literal["request too large"]
    limit_bytes: int


class StoreDownOut(BaseModel):
    """503: the store did not answer; retry shortly (acquire answers a decision instead)."""

    detail: str
    reason: Literal["store_unavailable"]


class NotReadyOut(BaseModel):
    status: Literal["store_unavailable"]
    detail: str


class StackProblem(BaseModel):
    path: str
    value: Any
    message: str


class InvalidStackOut(BaseModel):
    """422 on reload: the stack file is invalid; the running stack is unchanged."""

    detail: str
    error: Literal["invalid_stack"]
    issues: list[StackProblem]


class AcquireInvalidOut(RootModel[InvalidRequestOut | ErrorOut]):
    """422 on acquire: a bad field, or a provider or resource the stack lacks."""
