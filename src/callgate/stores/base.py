"""The store contract: a few atomic primitives, the same on every store.

The gate turns a call into a :class:`Claim` (every slot, provider key group and window
it needs); a store applies it in one atomic step: it expires what is due, promotes queue
heads that now fit, then takes every slot or none. Everything else (messages, retry
timing, what to do with a blocked call) is the gate's.

Keys name a layer and a scope: ``number:+14155550100``, ``trunk:carrier-a``,
``account:acme``, ``provider:openai`` (the pool), ``provider:openai:key-a`` (one key),
``resource:db``, and windows ``window:<layer>:<scope>:<direction>:<period>``.

Ordering rules
--------------
Every store applies these inside its atomic step, so that memory, SQLite and Redis give
the same answer to the same calls (``tests/gate/test_ordering.py`` pins each rule on
every store; ``tests/stores/test_differential.py`` runs random calls on all three at
once). "Config order" is the order of the stack file (``Limits.accounts``, a pool's
``keys``).

1. **Lookup without an account** (``renew`` and ``release`` with ``account=None``): a
   live record (a lease or a queue entry) of any account first; else a rejected or ended
   record; among several, the first account in config order. Only the accounts of the
   current stack are searched, and a rejected or ended record past its ``until`` is gone
   (to every lookup) whether or not the store has purged it yet.
2. **Arrival.** A queued call gets a store-wide sequence number when it is queued (a poll
   keeps it). Each number has one queue, ordered by priority (higher first) then arrival;
   a queued call's position is its 1-based rank there. An inbound call that finds nobody
   blocked is still queued while an entry of equal or higher priority waits on its number.
3. **Promotion order.** Queue heads of every number (every account) are tried one at a
   time, best (priority, arrival) first: a head that fits all of its layers is promoted,
   and the entry behind it on its number becomes a head that competes at its own
   (priority, arrival); a head that does not fit is passed over, does not block other
   numbers, and nothing behind it on its own number is tried in that step (promotion
   only takes room, so it cannot fit later in the step). A promoted lease's TTL runs
   from the step that promoted it.
4. **Which head a release promotes first.** A release frees the lease's slots (or cancels
   a queued call: the entry behind it becomes the head) and then promotes by rule 3: the
   released call's own number has no precedence over the other numbers' heads.
5. **Key choice.** In each provider group, keys cooling down (or disabled) are skipped;
   of the others, the key with the most headroom (cap - in use) wins, ties going to the
   key listed first; a key without headroom is never chosen. No key: the group blocks
   with ``provider_cooldown`` (until the earliest cooldown end) when every key is
   cooling, else ``capacity``. Shadow mode (``Claim.force``) takes, for a group with no
   key, the key with the most headroom among all keys, ties again to the first listed.
6. **Expiry before promotion.** A step first expires leases with ``expires_at <= now``
   (their slots return), then rejects queue entries with ``deadline <= now`` (max wait)
   or ``last_poll + poll_timeout <= now`` (``queue_timeout``: their next poll replays the
   rejection for ``tombstone_ttl``), then forgets records past their ``until``, and only
   then promotes. So a caller past its time is never promoted, even into room freed at
   the same instant. Time-driven changes happen at the first step at or after their
   time, judged by that step's clock: a lease that expired at t=30 but is first noticed
   at t=45 promotes at t=45, and a caller whose poll timeout fell between is dropped.
7. **Blockers.** A verdict lists its blockers in claim order: all-of slots (trunk,
   number, account, resources), then windows, then provider groups, then (outbound) the
   scopes a waiting inbound head needs, in the order of those heads (rule 3) and their
   needs. The gate names the blocker with the largest retry-after; on a tie, the first.
8. **Usage.** Layers and windows come in the order of the stack's limits, cooldowns by
   scope name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

from callgate.model import Direction, Layer, Reason

RecordState = Literal["leased", "queued", "rejected", "ended"]

DISABLED = float("inf")  # a key cooled "until" this is disabled until the next reload


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


class Route:
    """What one kind of call needs: its all-of slots, provider key groups and windows.

    The gate compiles one per number, direction and override at (re)load and every claim of
    that kind points to it. What the kernel derives from a route (its plan under some
    limits, the slots a lease holds for a key choice) is kept on the route itself, so it is
    computed once per route and dropped with it on reload. A claim read back from a store
    gets a route of its own.
    """

    __slots__ = ("groups", "held", "plan", "scopes", "slots", "windows")

    def __init__(self, slots: tuple[SlotNeed, ...], groups: tuple[KeyGroup, ...],
                 windows: tuple[str, ...]) -> None:
        self.slots = slots
        self.groups = groups
        self.windows = windows
        keys = {slot.key for slot in slots} | {g.pool_key for g in groups}
        # Every slot key a claim of this route may read, sorted.
        self.scopes: tuple[str, ...] = tuple(sorted(
            keys | {g.key_slot(alias) for g in groups for alias in g.keys}))
        self.plan: object = None  # the kernel's plan, for the limits it was made under
        # The slots a lease holds, per key choice (the chosen aliases in group order).
        self.held: dict[tuple[str, ...], tuple[tuple[str, int], ...]] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Route) and (self.slots, self.groups, self.windows) == (
            other.slots, other.groups, other.windows)

    def __hash__(self) -> int:
        return hash((self.slots, self.groups, self.windows))

    def __repr__(self) -> str:
        return f"Route({self.slots!r}, {self.groups!r}, {self.windows!r})"


@dataclass(slots=True)
class Claim:
    """Everything one call needs, as the gate computed it from the stack.

    Treat it as immutable. It is not frozen because one is built per decision and a frozen
    dataclass's ``__init__`` costs several times a slotted one's; ``route`` is shared by
    every claim of the same kind (see :class:`Route`).
    """

    account: str
    call_id: str
    number: str
    direction: Direction
    priority: int
    fingerprint: str
    route: Route
    ttl_s: float  # what every renew without its own TTL applies
    max_duration_s: float
    queue: QueuePolicy | None = None
    force: bool = False
    # The lease's first expiry, when it differs from ttl_s (0: ttl_s): an outbound call's
    # ring time (``[outbound] dial_ttl``), which the first renew or the answer replaces.
    first_ttl_s: float = 0.0

    @property
    def slots(self) -> tuple[SlotNeed, ...]:
        return self.route.slots

    @property
    def groups(self) -> tuple[KeyGroup, ...]:
        return self.route.groups

    @property
    def windows(self) -> tuple[str, ...]:
        return self.route.windows

    def scopes(self) -> tuple[str, ...]:
        """Every slot key this claim may read, sorted."""
        return self.route.scopes


@dataclass(frozen=True)
class Limits:
    """Caps and windows of the stack as the store applies them, plus its timers."""

    caps: Mapping[str, int]
    windows: Mapping[str, tuple[int, float]]
    poll_timeout_s: float
    tombstone_ttl_s: float
    ended_ttl_s: float
    accounts: tuple[str, ...] = ()

    def scaled(self, fraction: float) -> Limits:
        """These limits with every cap and window limit times ``fraction``, rounded down
        but never below one: a fraction that rounded a small cap to zero would make
        ``admit_local`` refuse like ``reject`` (the operator chose to admit in an outage)."""
        if fraction == 1.0:
            return self
        return Limits(
            {key: max(1, math.floor(cap * fraction)) for key, cap in self.caps.items()},
            {key: (max(1, math.floor(limit * fraction)), period)
             for key, (limit, period) in self.windows.items()},
            self.poll_timeout_s, self.tombstone_ttl_s, self.ended_ttl_s, self.accounts)


@dataclass(frozen=True)
class Blocker:
    """One reason a claim cannot be taken now; ``until`` is when it surely ends, if known."""

    key: str
    reason: Reason
    until: float | None = None


@dataclass(slots=True)
class Record:
    """What a store keeps per (account, call_id): a value.

    A record is never changed once built: every change of a call's state is one of the
    transitions below, which returns a new record for the kernel to ``put``. So a store
    always has the record it last indexed beside the one replacing it, and a record the
    kernel holds is what was read or put, never something another step changed under it.
    (Not frozen, like :class:`Claim`: a frozen dataclass's ``__init__`` costs several
    times a slotted one's, and these are built on every decision.)
    """

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

    # transitions -----------------------------------------------------------------------
    def _copy(self) -> Record:
        # Positional, in field order: keywords cost measurably more per decision.
        return Record(
            self.account, self.call_id, self.state, self.fingerprint, self.number,
            self.direction, self.priority, self.held, self.keys, self.admitted_at,
            self.expires_at, self.max_end, self.ttl_s, self.promoted, self.claim, self.seq,
            self.enqueued_at, self.deadline, self.last_poll, self.until, self.reason,
            self.blocker_key, self.retry_after_s, self.ended_by)

    def leased(self, held: tuple[tuple[str, int], ...], keys: dict[str, str], now: float,
               expires_at: float, max_end: float, ttl_s: float, promoted: bool) -> Record:
        """A queued call promoted to a lease (a new call's lease is built directly)."""
        r = self._copy()
        r.state, r.held, r.keys, r.admitted_at = "leased", held, keys, now
        r.expires_at, r.max_end, r.ttl_s, r.promoted, r.claim = (
            expires_at, max_end, ttl_s, promoted, None)
        return r

    def renewed(self, ttl_s: float, expires_at: float) -> Record:
        r = self._copy()
        r.ttl_s, r.expires_at = ttl_s, expires_at
        return r

    def polled(self, now: float) -> Record:
        """A queued call that asked again: it is still waiting."""
        r = self._copy()
        r.last_poll = now
        return r

    def ended(self, how: Literal["released", "expired", "cancelled"], until: float) -> Record:
        """A lease released or expired, or a queued call cancelled; remembered until
        ``until``. Its slots are gone, and nothing reads an ended call's keys."""
        r = self._copy()
        r.state, r.ended_by, r.until, r.held, r.keys = "ended", how, until, (), {}
        if how == "cancelled":
            r.claim = None
        return r

    def rejected(self, reason: Reason, key: str, retry_after_s: float | None,
                 until: float) -> Record:
        """Refused (and remembered until ``until``, to answer a retry the same way)."""
        r = self._copy()
        r.state, r.reason, r.blocker_key, r.retry_after_s, r.until, r.claim = (
            "rejected", reason, key, retry_after_s, until, None)
        return r


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
    local: bool = False  # admitted by a FallbackStore's in-process store while the primary was down


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

    # False when every step stays in this process's memory: the service then decides on
    # its event loop instead of a worker thread.
    does_io: bool

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
