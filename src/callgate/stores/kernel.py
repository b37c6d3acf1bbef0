"""The admission algorithm that every store shares (memory, SQLite, Redis).

Think of a petrol station with a few pumps, one queue per entrance, and an attendant
who only acts between two ticks of the clock. At every tick (every primitive) the
attendant first sends home the cars whose time is up (expired leases, callers who stopped
polling or waited past ``max_wait``), then waves in queue heads that now fit, highest
priority and earliest arrival first, then deals with the car in front of them: all of
its pumps at once, or none. (A renew while nobody waits is a glance at one car only: it
moves that car's time and nothing else, see :func:`renew`.)

Records are values: every change to a call is one of :class:`Record`'s transitions,
which returns a new record that the step hands to ``State.put``.

The functions here run *inside* a store's atomic step and see the store only through
:class:`State`. A store makes the step atomic its own way (a lock in memory, one
``BEGIN IMMEDIATE`` transaction in SQLite; in Redis a snapshot read before the step and
applied after it under guards, see :mod:`callgate.stores.redis_step`).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from callgate.model import Reason
from callgate.stores.base import (
    Blocker,
    Claim,
    KeyGroup,
    LayerUsage,
    Limits,
    Record,
    RenewOutcome,
    SlotNeed,
    UsageSnapshot,
    Verdict,
    VerdictKind,
    WindowUsage,
)


class State(Protocol):
    """What the algorithm reads and writes; every call happens inside one atomic step."""

    limits: Limits

    def get(self, account: str | None, call_id: str) -> Record | None:
        """The record of ``call_id`` (in any account when ``account`` is None)."""
        ...
    def put(self, record: Record) -> None: ...
    def in_use(self, key: str) -> int: ...
    def add(self, key: str, delta: int) -> None: ...
    def count_since(self, key: str, since: float) -> int:
        """Admissions logged under ``key`` after ``since``."""
        ...

    def nth_since(self, key: str, since: float, n: int) -> float:
        """The time of the ``n``-th (0-based, oldest first) admission after ``since``."""
        ...

    def log_event(self, key: str, at: float) -> None: ...
    def cooldown_until(self, provider: str, alias: str) -> float | None: ...
    def due_leases(self, now: float) -> list[Record]: ...
    def due_queued(self, now: float) -> list[Record]: ...
    def purge(self, now: float) -> None: ...
    def queue_heads(self) -> list[Record]: ...
    def any_queued(self) -> bool:
        """Whether any call is queued (on any number). Exact at the start of a step (the
        kernel asks nothing later); after puts a store may answer True conservatively."""
        ...

    def queue_of(self, number: str) -> list[Record]: ...
    def next_seq(self) -> int: ...


class Settling(State, Protocol):
    """An optional fast path a store's state may offer (the memory store does).

    ``settle(now)`` does the part of housekeeping that needs no decision (dropping index
    entries and tombstones past their time) and returns True when nothing else is due and
    no call is queued: housekeeping and promotion would then change nothing, so the kernel
    skips them.
    """

    def settle(self, now: float) -> bool: ...

    def add_held(self, held: Iterable[tuple[str, int]], sign: int) -> None:
        """``add(key, sign * units)`` for every (key, units) pair, in one call."""
        ...


def _settled(st: State, now: float) -> bool:
    settle = getattr(st, "settle", None)
    return settle is not None and bool(settle(now))


def _add_held(st: State, held: Iterable[tuple[str, int]], sign: int) -> None:
    add_held = getattr(st, "add_held", None)
    if add_held is not None:
        add_held(held, sign)
        return
    add = st.add
    for key, units in held:
        add(key, sign * units)


Choice = dict[str, str]

EXPIRED_TOTAL = "#expired"
"""The counter (among the slot counts, never capped) of leases that expired unreleased."""


def housekeeping(st: State, now: float) -> int:
    """Expire due leases and stale queue entries; returns how many leases expired."""
    expired = 0
    for record in st.due_leases(now):
        end_lease(st, record, now, "expired")
        expired += 1
    for record in st.due_queued(now):
        reject(st, record, now, Reason.QUEUE_TIMEOUT, f"queue:{record.number}", None)
    st.purge(now)
    if expired:
        # Kept in the store beside the slot counts, so every gate process reports the
        # same total whichever of them happened to expire the lease.
        st.add(EXPIRED_TOTAL, expired)
    return expired


def end_lease(st: State, record: Record, now: float,
              how: Literal["released", "expired"]) -> Record:
    _add_held(st, record.held, -1)
    ended = record.ended(how, now + st.limits.ended_ttl_s)
    st.put(ended)
    return ended


def full_key(blockers: list[Blocker], number: str, now: float) -> str:
    """The scope a ``queue_full`` refusal names: the full layer that frees last (a full trunk
    is a SIP 503, a full number a 486), first on ties; the queue only when no layer is full
    (the callers already waiting fill it). Kept on the record, so a replay names it too."""
    full = [b for b in blockers if not b.key.startswith("queue:")]
    if not full:
        return f"queue:{number}"
    return max(full, key=lambda b: now if b.until is None else b.until).key


def reject(
    st: State, record: Record, now: float, reason: Reason, key: str, retry_after_s: float | None
) -> Record:
    rejected = record.rejected(reason, key, retry_after_s, now + st.limits.tombstone_ttl_s)
    st.put(rejected)
    return rejected


@dataclass(slots=True)
class _Plan:
    """A route's slots, windows and groups read against one :class:`Limits`, caps resolved.

    Only what :func:`evaluate` reads, in the order it reads it: scopes without a cap or
    window spec are left out (evaluate skips them anyway).
    """

    limits: Limits
    slots: tuple[SlotNeed, ...]
    groups: tuple[KeyGroup, ...]
    windows: tuple[str, ...]
    capped: tuple[tuple[SlotNeed, str, int, int], ...]  # slot, key, units + reserve, cap
    rates: tuple[tuple[str, int, float], ...]  # window key, limit, period
    pools: tuple[tuple[KeyGroup, int | None, tuple[tuple[str, str, int], ...]], ...]
    # (group, pool cap, ((alias, key slot, key cap), ...))


def _plan(claim: Claim, limits: Limits) -> _Plan:
    """The claim's route compiled against ``limits`` (kept on the route, made once)."""
    route = claim.route
    plan = route.plan
    if isinstance(plan, _Plan) and plan.limits is limits:
        return plan
    slots, groups, windows = route.slots, route.groups, route.windows
    caps, specs = limits.caps, limits.windows
    plan = _Plan(
        limits, slots, groups, windows,
        tuple((s, s.key, s.units + s.reserve, caps[s.key]) for s in slots if s.key in caps),
        tuple((key, *specs[key]) for key in windows if key in specs),
        tuple((g, caps.get(g.pool_key), tuple((a, k, caps.get(k, 0)) for a, k in g.key_slots))
              for g in groups),
    )
    route.plan = plan
    return plan


def evaluate(st: State, claim: Claim, now: float) -> tuple[list[Blocker], Choice]:
    """Every reason ``claim`` cannot be taken now, and the key each provider group would use."""
    plan = _plan(claim, st.limits)
    in_use = st.in_use
    blockers: list[Blocker] = []
    for slot, key, need, cap in plan.capped:
        used = in_use(key)
        if used + need > cap:
            reserved = slot.reserve > 0 and used + slot.units <= cap
            blockers.append(
                Blocker(key, Reason.RESERVED_INBOUND if reserved else Reason.CAPACITY)
            )
    for key, limit, period in plan.rates:
        count = st.count_since(key, now - period)
        if count + 1 > limit:
            # The window has room again once enough of its oldest events have left it.
            leaves = (st.nth_since(key, now - period, count - limit) + period
                      if limit > 0 else None)
            blockers.append(Blocker(key, Reason.RATE_WINDOW, leaves))
    choice: Choice = {}
    cooldown_until = st.cooldown_until
    for group, pool_cap, key_slots in plan.pools:
        pool_key = group.pool_key
        if pool_cap is not None and in_use(pool_key) + 1 > pool_cap:
            blockers.append(Blocker(pool_key, Reason.CAPACITY))
            continue
        # The most headroom wins; on a tie the earlier key (config order) keeps it.
        best: str | None = None
        best_room = 0
        cooling: list[float] = []
        provider = group.provider
        for alias, key_slot, key_cap in key_slots:
            until = cooldown_until(provider, alias)
            if until is not None and until > now:
                cooling.append(until)
                continue
            headroom = key_cap - in_use(key_slot)
            if headroom > best_room:
                best, best_room = alias, headroom
        if best is not None:
            choice[provider] = best
        elif len(cooling) == len(group.keys):
            blockers.append(Blocker(pool_key, Reason.PROVIDER_COOLDOWN, min(cooling)))
        else:
            blockers.append(Blocker(pool_key, Reason.CAPACITY))
    return blockers, choice


def _force_choice(st: State, claim: Claim, choice: Choice) -> Choice:
    """Shadow mode: a key for every group even when all are full (most headroom wins)."""
    forced: Choice = {}  # in group order, as _held relies on
    for group in claim.groups:
        alias = choice.get(group.provider)
        if alias is None:
            alias = max(
                group.keys,
                key=lambda a: st.limits.caps.get(group.key_slot(a), 0)
                - st.in_use(group.key_slot(a)),
            )
        forced[group.provider] = alias
    return forced


Held = tuple[tuple[str, int], ...]


def _held(claim: Claim, choice: Choice) -> Held:
    """The slots a lease holds; one tuple per route and key choice, shared by its leases."""
    # ``choice`` lists the groups' providers in group order (evaluate and _force_choice
    # build it so), so its values alone name the keys.
    route = claim.route
    aliases = tuple(choice.values())
    held = route.held.get(aliases)
    if held is not None:
        return held
    items = [(slot.key, slot.units) for slot in route.slots]
    for group in route.groups:
        items.append((group.pool_key, 1))
        items.append((group.key_slot(choice[group.provider]), 1))
    held = tuple(items)
    route.held[aliases] = held
    return held


def take(
    st: State, claim: Claim, choice: Choice, now: float, record: Record | None, promoted: bool
) -> Record:
    held = _held(claim, choice)
    _add_held(st, held, 1)
    # A store that applies under value guards (Redis) must know the reserve each slot
    # leaves free, to guard "count + delta stays within cap - reserve" at apply time.
    need_room = getattr(st, "need_room", None)
    if need_room is not None:
        need_room(claim)
    # The windows the stack has now: a claim queued before a reload may name one it removed.
    for key, _, _ in _plan(claim, st.limits).rates:
        st.log_event(key, now)
    max_end = now + claim.max_duration_s
    expires_at = min(now + (claim.first_ttl_s or claim.ttl_s), max_end)
    if record is None:
        # Positional (Record's field order), as keywords cost measurably more per admission:
        # account, call_id, state, fingerprint, number, direction, priority, held, keys,
        # admitted_at, expires_at, max_end, ttl_s, promoted.
        record = Record(
            claim.account, claim.call_id, "leased", claim.fingerprint, claim.number,
            claim.direction, claim.priority, held, dict(choice), now, expires_at, max_end,
            claim.ttl_s, promoted,
        )
    else:
        record = record.leased(held, dict(choice), now, expires_at, max_end, claim.ttl_s,
                               promoted)
    st.put(record)
    return record


Blocked = list[tuple[Record, list[Blocker]]]


def promote(st: State, now: float) -> Blocked:
    """Admit the queue heads that fit, best (priority, arrival) first; return the others.

    Ordering rule 3 of ``stores/base.py``: a promoted head's successor on its number
    competes at its own (priority, arrival); a head that does not fit is passed over with
    its blockers, and nothing behind it is tried (promotion only takes room, so it cannot
    fit later in this step). The heads passed over come back in (priority, arrival) order.
    """
    # (-priority, arrival, record): arrivals are unique, so records are never compared.
    heads = [(-head.priority, head.seq, head) for head in st.queue_heads()]
    heapq.heapify(heads)
    blocked: Blocked = []
    while heads:
        head = heapq.heappop(heads)[2]
        assert head.claim is not None, "a queued record always keeps its claim"
        blockers, choice = evaluate(st, head.claim, now)
        if blockers:
            blocked.append((head, blockers))
            continue
        take(st, head.claim, choice, now, head, promoted=True)
        behind = st.queue_of(head.number)
        if behind:
            heapq.heappush(heads, (-behind[0].priority, behind[0].seq, behind[0]))
    return blocked


def inbound_waiting(st: State, claim: Claim, blocked: Blocked, now: float) -> list[Blocker]:
    """Scopes where this outbound call would take room that a waiting inbound head needs."""
    if not blocked:
        return []
    mine = {slot.key: slot.units for slot in claim.slots}
    my_pools = {group.provider for group in claim.groups}
    demand: dict[str, int] = defaultdict(int)
    pools: dict[str, Iterable[str]] = {}
    for head, _ in blocked:
        assert head.claim is not None
        for slot in head.claim.slots:
            if slot.key in mine:
                demand[slot.key] += slot.units + slot.reserve
        for group in head.claim.groups:
            if group.provider in my_pools:
                demand[group.pool_key] += 1
                pools[group.pool_key] = group.keys
    found = []
    caps = st.limits.caps
    for key, wanted in demand.items():
        if key in pools:
            provider = key.partition(":")[2]
            free = sum(
                max(0, caps.get(f"{key}:{a}", 0) - st.in_use(f"{key}:{a}"))
                for a in pools[key]
                if (st.cooldown_until(provider, a) or 0.0) <= now
            )
            if key in caps:
                free = min(free, caps[key] - st.in_use(key))
            if free - 1 < wanted:
                found.append(Blocker(key, Reason.INBOUND_WAITING))
        elif key in caps and st.in_use(key) + mine[key] + wanted > caps[key]:
            found.append(Blocker(key, Reason.INBOUND_WAITING))
    return found


def position(st: State, record: Record) -> int:
    for index, entry in enumerate(st.queue_of(record.number)):
        if entry.call_id == record.call_id and entry.account == record.account:
            return index + 1
    return 0


def acquire(st: State, claim: Claim, now: float) -> Verdict:
    """The whole admission step for one call (see the module docstring)."""
    settled = _settled(st, now)
    if settled:
        blocked: Blocked = []
    else:
        housekeeping(st, now)
        blocked = promote(st, now)
    existing = st.get(claim.account, claim.call_id)
    # A tombstone past its time is gone, whenever the store gets round to purging it.
    if existing is not None and not (existing.state in ("rejected", "ended")
                                     and existing.until <= now):
        return _replay(st, existing, claim, now)
    blockers, choice = evaluate(st, claim, now)
    if claim.direction == "inbound":
        # Settled: no call is queued, so nobody is ahead.
        ahead = [] if settled else [
            e for e in st.queue_of(claim.number) if e.priority >= claim.priority]
        if ahead and not blockers:
            head_blockers = next((b for h, b in blocked if h.number == claim.number), [])
            blockers = head_blockers or [Blocker(f"queue:{claim.number}", Reason.CAPACITY)]
    else:
        blockers += inbound_waiting(st, claim, blocked, now)
    if not blockers or claim.force:
        if blockers:
            choice = _force_choice(st, claim, choice)
        record = take(st, claim, choice, now, None, promoted=False)
        return Verdict(VerdictKind.ADMITTED, record, tuple(blockers))
    if claim.queue is None:
        return Verdict(VerdictKind.BLOCKED, None, tuple(blockers))
    queue_len = len(st.queue_of(claim.number))
    if queue_len >= claim.queue.queue_max or claim.queue.max_wait_s <= 0:
        refused = Record(
            account=claim.account, call_id=claim.call_id, state="queued",
            fingerprint=claim.fingerprint, number=claim.number, direction=claim.direction,
            priority=claim.priority)
        refused = reject(st, refused, now, Reason.QUEUE_FULL,
                         full_key(blockers, claim.number, now), None)
        return Verdict(VerdictKind.QUEUE_FULL, refused, tuple(blockers))
    record = Record(
        account=claim.account, call_id=claim.call_id, state="queued",
        fingerprint=claim.fingerprint, number=claim.number, direction=claim.direction,
        priority=claim.priority, claim=claim, seq=st.next_seq(), enqueued_at=now,
        deadline=now + claim.queue.max_wait_s, last_poll=now,
    )
    st.put(record)
    return Verdict(VerdictKind.QUEUED, record, tuple(blockers), position(st, record))


def _replay(st: State, record: Record, claim: Claim, now: float) -> Verdict:
    if record.fingerprint != claim.fingerprint:
        return Verdict(VerdictKind.CONFLICT, record)
    if record.state == "leased":
        return Verdict(VerdictKind.ADMITTED, record, replay=True)
    if record.state == "queued":
        record = record.polled(now)
        st.put(record)
        assert record.claim is not None
        blockers, _ = evaluate(st, record.claim, now)
        if not blockers:
            blockers = [Blocker(f"queue:{record.number}", Reason.CAPACITY)]
        return Verdict(VerdictKind.QUEUED, record, tuple(blockers), position(st, record), True)
    if record.state == "rejected":
        return Verdict(VerdictKind.REPLAY, record, replay=True)
    return Verdict(VerdictKind.ENDED, record, replay=True)


def release(st: State, account: str | None, call_id: str, now: float) -> tuple[bool, bool]:
    """Free a lease or cancel a queued call, then promote; idempotent."""
    # Settled means no call is queued: nothing to cancel below and nobody to promote after.
    settled = _settled(st, now)
    if not settled:
        housekeeping(st, now)
    record = st.get(account, call_id)
    released = cancelled = False
    if record is not None and record.state == "leased":
        end_lease(st, record, now, "released")
        released = True
    elif record is not None and record.state == "queued":
        st.put(record.ended("cancelled", now + st.limits.ended_ttl_s))
        cancelled = True
    if not settled:
        promote(st, now)
    return released, cancelled


def renewed_expiry(ttl_s: float, max_end: float, now: float) -> float:
    """A lease renewed at ``now`` expires one TTL later, never past its maximum end (the
    Redis renew script computes the same in Lua: ``math.min(now + t, m)``)."""
    return min(now + ttl_s, max_end)


def renew(
    st: State, account: str | None, call_id: str, ttl_s: float | None, now: float
) -> RenewOutcome:
    # With a call queued a renew is a full step: what is due ends and the queues' heads are
    # promoted first, as in every step. With none queued nothing waits on housekeeping, so
    # a renew touches its own call only (other due leases end at the next admission,
    # release or reaper pass, exactly as they would if no renew had come): this is what
    # lets a store renew in one small atomic operation (Redis: lua/renew.lua).
    if st.any_queued():
        housekeeping(st, now)
        promote(st, now)
    else:
        st.purge(now)  # a call ended past ended_ttl is unknown, as after any step
    record = st.get(account, call_id)
    if record is None:
        return RenewOutcome("unknown")
    if record.state == "leased" and record.expires_at <= now:
        record = end_lease(st, record, now, "expired")
        st.add(EXPIRED_TOTAL, 1)
    if record.state == "leased":
        ttl = ttl_s or record.ttl_s
        record = record.renewed(ttl, renewed_expiry(ttl, record.max_end, now))
        st.put(record)
        return RenewOutcome("renewed", record)
    if record.state == "queued":
        return RenewOutcome("queued", record)
    if record.state == "ended" and record.ended_by == "expired":
        return RenewOutcome("expired", record)
    return RenewOutcome("ended", record)


def expire(st: State, now: float) -> int:
    expired = housekeeping(st, now)
    promote(st, now)
    return expired


def usage(st: State, now: float, in_use: dict[str, int], cooldowns: list[tuple[str, float]],
          queue: list[Record], leases: int) -> UsageSnapshot:
    """Shape a usage snapshot from what a store read inside its atomic step."""
    queued: dict[str, int] = defaultdict(int)
    for entry in queue:
        if entry.claim is not None:
            for key in entry.claim.scopes():
                queued[key] += 1
    layers = tuple(
        LayerUsage(key, in_use.get(key, 0), cap, queued.get(key, 0))
        for key, cap in st.limits.caps.items()
    )
    windows = tuple(
        WindowUsage(key, st.count_since(key, now - period), limit, period)
        for key, (limit, period) in st.limits.windows.items()
    )
    # Cooldowns by scope name: every store reads them in its own order.
    cooling = tuple(sorted((k, u) for k, u in cooldowns if u > now))
    return UsageSnapshot(
        layers, windows, cooling, tuple(queue), leases,
        in_use.get(EXPIRED_TOTAL, 0),
    )
