"""Values the gate speaks in: a call, the lease it holds, the decision it gets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Direction = Literal["inbound", "outbound"]

DEFAULT_OVERFLOW_MESSAGE = (
    "We are receiving more calls than we can take right now. Please call again shortly."
)
"""``[inbound] overflow_message`` unless the stack says otherwise; the client tells callers
the same when the gate cannot be reached."""


class Outcome(StrEnum):
    ADMITTED = "admitted"
    QUEUED = "queued"
    RETRY_LATER = "retry_later"
    REJECTED = "rejected"


class Layer(StrEnum):
    TRUNK = "trunk"
    NUMBER = "number"
    ACCOUNT = "account"
    PROVIDER = "provider"
    RESOURCE = "resource"
    WINDOW = "window"
    QUEUE = "queue"
    STORE = "store"


class Reason(StrEnum):
    ADMITTED = "admitted"
    PROMOTED = "promoted"
    CAPACITY = "capacity"
    RATE_WINDOW = "rate_window"
    RESERVED_INBOUND = "reserved_inbound"
    INBOUND_WAITING = "inbound_waiting"
    PROVIDER_COOLDOWN = "provider_cooldown"
    QUEUE_FULL = "queue_full"
    QUEUE_TIMEOUT = "queue_timeout"
    MAX_ATTEMPTS = "max_attempts"
    CALL_ENDED = "call_ended"
    STORE_UNAVAILABLE = "store_unavailable"
    ADMITTED_LOCAL = "admitted_local"
    SHADOW = "shadow"
    # The client's own, never sent by the gate: no decision arrived because the gate could
    # not be reached (GateClient.call()/adopt() turn that into CallNotAdmitted).
    GATE_UNREACHABLE = "gate_unreachable"


# The bounds of a call's fields. The API's request model (service/schemas.py:CallRequest)
# documents and enforces all of them; Call checks the numeric ones too, so a library caller
# never reaches a store with a number it cannot keep (SQLite holds 64-bit integers, Redis
# scripts doubles: a 32-bit priority is exact in both).
PRIORITY_MIN = -(2**31)
PRIORITY_MAX = 2**31 - 1
ATTEMPT_MAX = 1000
CALL_ID_MAX_BYTES = 256
REMOTE_MAX_BYTES = 256


@dataclass(frozen=True)
class Call:
    """One phone call asking to start. ``number`` is our number (dialled or caller id)."""

    call_id: str
    direction: Direction
    number: str
    remote: str | None = None
    priority: int = 0
    attempt: int = 1
    providers: tuple[str, ...] | None = None
    resources: Mapping[str, int] | None = None

    # Written out for speed, like Lease.__init__ (same fields, same defaults; still frozen).
    def __init__(self, call_id: str, direction: Direction, number: str,
                 remote: str | None = None, priority: int = 0, attempt: int = 1,
                 providers: tuple[str, ...] | None = None,
                 resources: Mapping[str, int] | None = None) -> None:
        if not call_id:
            raise ValueError("call_id must be a non-empty string")
        if direction != "inbound" and direction != "outbound":
            raise ValueError(f"direction must be 'inbound' or 'outbound', got {direction!r}")
        if not 1 <= attempt <= ATTEMPT_MAX:
            raise ValueError(f"attempt must be in [1, {ATTEMPT_MAX}], got {attempt}")
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise ValueError(f"priority must be in [{PRIORITY_MIN}, {PRIORITY_MAX}] "
                             f"(a 32-bit integer), got {priority}")
        values = self.__dict__
        values["call_id"] = call_id
        values["direction"] = direction
        values["number"] = number
        values["remote"] = remote
        values["priority"] = priority
        values["attempt"] = attempt
        values["providers"] = providers
        values["resources"] = resources


@dataclass(frozen=True)
class Lease:
    """What an admitted call holds until it is released or expires (epoch seconds)."""

    call_id: str
    account: str
    expires_at: float
    ttl_s: float
    keys: Mapping[str, str] = field(default_factory=dict)
    admitted_at: float = 0.0

    # Written out (same fields, same defaults) because a frozen dataclass's generated
    # __init__ sets each field through object.__setattr__, which costs about twice this on
    # the gate's hot path; the instance stays frozen, compared and hashed by its fields.
    def __init__(self, call_id: str, account: str, expires_at: float, ttl_s: float,
                 keys: Mapping[str, str] | None = None, admitted_at: float = 0.0) -> None:
        values = self.__dict__
        values["call_id"] = call_id
        values["account"] = account
        values["expires_at"] = expires_at
        values["ttl_s"] = ttl_s
        values["keys"] = {} if keys is None else keys
        values["admitted_at"] = admitted_at


@dataclass(frozen=True)
class QueueInfo:
    position: int
    estimated_wait_s: float


@dataclass(frozen=True)
class Decision:
    """The answer to a call; always names the layer, scope and reason that decided it."""

    call_id: str
    outcome: Outcome
    layer: Layer | None
    scope: str | None
    reason: Reason
    lease: Lease | None = None
    queue: QueueInfo | None = None
    retry_after_s: float | None = None
    message: str | None = None

    # Written out for speed, like Lease.__init__ (same fields, same defaults; still frozen).
    def __init__(self, call_id: str, outcome: Outcome, layer: Layer | None, scope: str | None,
                 reason: Reason, lease: Lease | None = None, queue: QueueInfo | None = None,
                 retry_after_s: float | None = None, message: str | None = None) -> None:
        values = self.__dict__
        values["call_id"] = call_id
        values["outcome"] = outcome
        values["layer"] = layer
        values["scope"] = scope
        values["reason"] = reason
        values["lease"] = lease
        values["queue"] = queue
        values["retry_after_s"] = retry_after_s
        values["message"] = message

    @property
    def admitted(self) -> bool:
        return self.outcome is Outcome.ADMITTED


@dataclass(frozen=True)
class ReleaseResult:
    released: bool
    cancelled: bool


class RenewStatus(StrEnum):
    RENEWED = "renewed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    ENDED = "ended"
    QUEUED = "queued"


@dataclass(frozen=True)
class RenewResult:
    status: RenewStatus
    lease: Lease | None = None
