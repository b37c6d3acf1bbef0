"""Values the gate speaks in: a call, the lease it holds, the decision it gets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Direction = Literal["inbound", "outbound"]


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

    def __post_init__(self) -> None:
        if not self.call_id:
            raise ValueError("call_id must be a non-empty string")
        if self.direction not in ("inbound", "outbound"):
            raise ValueError(f"direction must be 'inbound' or 'outbound', got {self.direction!r}")
        if self.attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {self.attempt}")


@dataclass(frozen=True)
class Lease:
    """What an admitted call holds until it is released or expires (epoch seconds)."""

    call_id: str
    account: str
    expires_at: float
    ttl_s: float
    keys: Mapping[str, str] = field(default_factory=dict)
    admitted_at: float = 0.0


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
