"""The store contract: a few atomic primitives, the same on every store.

The gate turns a call into a :class:`Claim` (every slot, provider key group and window
it needs); a store applies it in one atomic step: it expires what is due, promotes queue
heads that now fit, then takes every slot or none. Two orderings are applied inside
that step because they must be atomic: the key with the most headroom wins in each
provider group (ties by config order, keys cooling down skipped), and only queue heads
are promoted, in (priority, arrival) order. Everything else (messages, retry timing,
what to do with a blocked call) is the gate's.

Keys name a layer and a scope: ``number:+14155550100``, ``trunk:carrier-a``,
``account:acme``, ``provider:openai`` (the pool), ``provider:openai:key-a`` (one key),
``resource:db``, and windows ``window:<layer>:<scope>:<direction>:<period>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

from callgate.model import Direction, Layer, Reason

RecordState = Literal["leased", "queued", "rejected", "ended"]


def split_key(key: str) -> tuple[Layer, str]:
    """(layer, scope) of a store key.

    ``window:number:+1415:outbound:1h`` -> (window, ``+1415:outbound:1h``).
    """
    layer, _, rest = key.partition(":")
    if layer == "window":
        return Layer.WINDOW, rest.partition(":")[2]
    return Layer(layer), rest


@dataclass(frozen=True)
class SlotNeed:
    """``units`` of one all-of slot; ``reserve`` more must stay free after taking them."""

    key: str
    units: int = 1
    reserve: int = 0


@dataclass(frozen=True)
class KeyGroup:
    """Any one key of a provider pool (``keys`` in config order)."""

    provider: str
    keys: tuple[str, ...]
    # Built once per stack and shared by every lease, rather than formatted per call.
    pool_key: str = field(init=False, repr=False, compare=False)
    # (alias, its slot key) in config order, for the kernel's key choice.
    key_slots: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)
    _slots: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pool_key", f"provider:{self.provider}")
        object.__setattr__(self, "_slots", {a: f"provider:{self.provider}:{a}" for a in self.keys})
        object.__setattr__(self, "key_slots", tuple(self._slots.items()))

    def key_slot(self, alias: str) -> str:
        return self._slots[alias]


@dataclass(frozen=True)
class QueuePolicy:
    queue_max: int
    max_wait_s: float


@dataclass(slots=True)
class Claim:
    """Everything one call needs, as the gate computed it from the stack.

    Treat it as immutable. It is not frozen because one is built per decision and a frozen
    dataclass's ``__init__`` costs several times a slotted one's; ``slots``, ``groups`` and
    ``windows`` are the gate's per-route tuples, shared by every claim of the route (stores
    cache per route on their identity).
    """

    account: str
    call_id: str
    number: str
    direction: Direction
    priority: int
    fingerprint: str
    slots: tuple[SlotNeed, ...]
    groups: tuple[KeyGroup, ...]
    windows: tuple[str, ...]
    ttl_s: float  # what every renew without its own TTL applies
    max_duration_s: float
    queue: QueuePolicy | None = None
    force: bool = False
    # The lease's first expiry, when it differs from ttl_s (0: ttl_s): an outbound call's
    # ring time (``[outbound] dial_ttl``), which the first renew or the answer replaces.
    first_ttl_s: float = 0.0

    def scopes(self) -> set[str]:
        keys = {slot.key for slot in self.slots} | {g.pool_key for g in self.groups}
        return keys | {g.key_slot(alias) for g in self.groups for alias in g.keys}


@dataclass(frozen=True)
class Limits:
    """Caps and windows of the stack as the store applies them, plus its timers."""

    caps: Mapping[str, int]
    windows: Mapping[str, tuple[int, float]]
    poll_timeout_s: float
    tombstone_ttl_s: float
    ended_ttl_s: float
    accounts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Blocker:
    """One reason a claim cannot be taken now; ``until`` is when it surely ends, if known."""

    key: str
    reason: Reason
    until: float | None = None


@dataclass(slots=True)
class Record:
    """What a store keeps per (account, call_id)."""

    account: str
    call_id: str
    state: RecordState
    fingerprint: str
    number: str
    direction: Direction
    priority: int = 0
    # leased
    held: tuple[tuple[str, int], ...] = ()
    keys: dict[str, str] = field(default_factory=dict)
    admitted_at: float = 0.0
    expires_at: float = 0.0
    max_end: float = 0.0
    ttl_s: float = 0.0
    promoted: bool = False
    # queued
    claim: Claim | None = None
    seq: int = 0
    enqueued_at: float = 0.0
    deadline: float = 0.0
    last_poll: float = 0.0
    # rejected / ended
    until: float = 0.0
    reason: Reason | None = None
    blocker_key: str | None = None
    retry_after_s: float | None = None
    ended_by: Literal["released", "expired", "cancelled", ""] = ""


class VerdictKind(StrEnum):
    ADMITTED = "admitted"  # a new lease, a promoted one, or a replay of either
    QUEUED = "queued"
    BLOCKED = "blocked"  # not taken and not queued: the gate decides what to answer
    QUEUE_FULL = "queue_full"
    REPLAY = "replay"  # a tombstoned rejection, replayed
    ENDED = "ended"
    CONFLICT = "conflict"


@dataclass(slots=True)
class Verdict:
    """A store's answer to a claim (not frozen for speed, like :class:`Claim`; never mutated)."""

    kind: VerdictKind
    record: Record | None = None
    blockers: tuple[Blocker, ...] = ()
    position: int = 0
    replay: bool = False


@dataclass(frozen=True)
class RenewOutcome:
    status: Literal["renewed", "unknown", "expired", "ended", "queued"]
    record: Record | None = None


@dataclass(frozen=True)
class LayerUsage:
    key: str
    in_use: int
    cap: int
    queued: int


@dataclass(frozen=True)
class WindowUsage:
    key: str
    count: int
    limit: int
    period_s: float


@dataclass(frozen=True)
class UsageSnapshot:
    layers: tuple[LayerUsage, ...]
    windows: tuple[WindowUsage, ...]
    cooldowns: tuple[tuple[str, float], ...]
    queue: tuple[Record, ...]
    leases: int
    expired_total: int = 0  # leases that expired unreleased since the store was created


class Store(Protocol):
    """What every store offers; each method is one atomic step at time ``now``."""

    def configure(self, limits: Limits) -> None: ...
    def acquire(self, claim: Claim, now: float) -> Verdict: ...
    def renew(
        self, account: str | None, call_id: str, ttl_s: float | None, now: float
    ) -> RenewOutcome: ...
    def release(self, account: str | None, call_id: str, now: float) -> tuple[bool, bool]: ...
    def tombstone(self, record: Record) -> None: ...
    def cooldown(self, provider: str, alias: str, until: float) -> None: ...
    def clear_disabled(self, now: float) -> None: ...
    def expire(self, now: float) -> int: ...
    def usage(self, now: float) -> UsageSnapshot: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...
