"""The gate: maps a call to every slot it needs, asks the store, shapes the decision.

The store takes all of a call's slots in one atomic step or none (see
:mod:`callgate.stores.kernel`); the gate owns everything around that step: which slots
a call needs (the routes, built at each load), the clock, and handing the verdict to
:mod:`callgate.policy`, which says what the caller is told. It knows stores only by their
contract (:class:`~callgate.stores.base.Store`); ``on_store_error = "admit_local"`` wraps
the store in a :class:`~callgate.stores.fallback.FallbackStore`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from callgate.clock import Clock
from callgate.config import Stack, Window
from callgate.durations import format_duration
from callgate.errors import StoreError, UnknownNumberError, UnknownProviderError
from callgate.model import (
    Call,
    Decision,
    Reason,
    ReleaseResult,
    RenewResult,
    RenewStatus,
)
from callgate.policy import Policy, lease_of
from callgate.stores.base import (
    DISABLED,
    Claim,
    KeyGroup,
    Limits,
    QueuePolicy,
    Record,
    Route,
    SlotNeed,
    Store,
    split_key,
)
from callgate.stores.fallback import FallbackStore

log = logging.getLogger("callgate.gate")


def window_key(layer: str, scope: str, window: Window) -> str:
    return f"window:{layer}:{scope}:{window.direction}:{format_duration(window.per)}"


def _applies(window: Window, direction: str) -> bool:
    return window.direction in ("any", direction)


@dataclass(frozen=True)
class _Loaded:
    """What the gate derives from one stack, swapped in whole on reload."""

    stack: Stack
    limits: Limits
    routes: dict[tuple[str, str], _Route]
    queue_policy: QueuePolicy
    policy: Policy
    # The settings every claim copies, read once here rather than per call.
    lease_ttl_s: float
    dial_ttl_s: float
    max_duration_s: float
    force: bool
    # The routes of calls that name their own providers or resources, compiled once per
    # distinct request (and bounded: see Gate._overrides).
    overrides: dict[tuple[object, ...], Route] = field(default_factory=dict)


@dataclass(frozen=True)
class _Route:
    """The fixed part of a claim for one number and direction, computed at (re)load."""

    account: str
    base_slots: tuple[SlotNeed, ...]  # trunk, number, account
    base_windows: tuple[str, ...]
    route: Route | None = None  # with the stack's resources and pools: calls without overrides
    queue: QueuePolicy | None = None  # inbound routes queue; outbound never does
    # Fingerprints of this route's calls without overrides, by (remote, priority): the
    # blake2b over a call's fields is ~1.4 µs (timeit), a tenth of a memory-store
    # decision. Bounded; dropped with the route.
    fingerprints: dict[tuple[str | None, int], str] = field(default_factory=dict)

    def fingerprint(self, call: Call) -> str:
        """:func:`fingerprint` of a call of this route that names no providers or resources."""
        if type(call.priority) is not int:  # True == 1 would share 1's entry
            return fingerprint(call)
        ident = (call.remote, call.priority)
        found = self.fingerprints.get(ident)
        if found is None:
            found = fingerprint(call)
            if len(self.fingerprints) >= 10_000:  # remote numbers vary: never unbounded
                self.fingerprints.clear()
            self.fingerprints[ident] = found
        return found


class Gate:
    """Admission control for every call of one stack (synchronous; clock in epoch seconds)."""

    def __init__(
        self, stack: Stack, store: Store, clock: Clock, *, rng: random.Random | None = None
    ) -> None:
        self.clock = clock
        self._primary = store
        self._store = store  # the primary, or a FallbackStore around it (admit_local)
        self._rng = rng or random.Random()
        self._apply(stack)
        self._store.configure(self._loaded.limits)

    # configuration ----------------------------------------------------------
    @staticmethod
    def limits_for(stack: Stack, fraction: float = 1.0) -> Limits:
        """Every cap and window of ``stack`` as store keys (``fraction`` scales the caps)."""
        caps: dict[str, int] = {}
        windows: dict[str, tuple[int, float]] = {}

        def add_windows(layer: str, scope: str, specs: tuple[Window, ...]) -> None:
            for spec in specs:
                windows[window_key(layer, scope, spec)] = (spec.limit, spec.per)

        for name, trunk in stack.trunks.items():
            caps[f"trunk:{name}"] = trunk.max_concurrent
            add_windows("trunk", name, trunk.windows)
            if trunk.max_cps is not None:
                add_windows("trunk", name, (Window(limit=trunk.max_cps, per=1.0),))
        for number, spec in stack.numbers.items():
            caps[f"number:{number}"] = spec.max_concurrent
            add_windows("number", number, spec.windows)
        for name, account in stack.accounts.items():
            caps[f"account:{name}"] = stack.plans[account.plan].max_concurrent
            add_windows("account", name, account.windows)
        for name, pool in stack.providers.items():
            total = len(pool.keys) * pool.sessions_per_key
            caps[f"provider:{name}"] = min(total, pool.max_sessions or total)
            for alias in pool.keys:
                caps[f"provider:{name}:{alias}"] = pool.sessions_per_key
            add_windows("provider", name, pool.windows)
        for name, resource in stack.resources.items():
            caps[f"resource:{name}"] = resource.capacity
        settings = stack.gate
        return Limits(caps, windows, settings.poll_timeout, settings.tombstone_ttl,
                      settings.ended_ttl, tuple(stack.accounts)).scaled(fraction)

    @property
    def stack(self) -> Stack:
        return self._loaded.stack

    @property
    def store_does_io(self) -> bool:
        """False when every decision stays in this process's memory (no blocking I/O)."""
        return self._store.does_io

    def _apply(self, stack: Stack) -> None:
        # Everything derived from the stack is built aside and swapped in with one
        # assignment, so a call on another thread sees the old stack or the new one whole.
        routes: dict[tuple[str, str], _Route] = {}
        queue_policy = QueuePolicy(stack.inbound.queue_max, stack.inbound.max_wait)
        for number, spec in stack.numbers.items():
            account = stack.accounts[spec.account]
            trunk = stack.trunks[spec.trunk]
            trunk_windows = trunk.windows
            if trunk.max_cps is not None:
                trunk_windows += (Window(limit=trunk.max_cps, per=1.0),)
            for direction in ("inbound", "outbound"):
                reserve = account.reserved_inbound if direction == "outbound" else 0
                slots = (
                    SlotNeed(f"trunk:{spec.trunk}"),
                    SlotNeed(f"number:{number}"),
                    SlotNeed(f"account:{spec.account}", reserve=reserve),
                )
                windows = tuple(
                    window_key(layer, scope, w)
                    for layer, scope, specs in (
                        ("trunk", spec.trunk, trunk_windows),
                        ("number", number, spec.windows),
                        ("account", spec.account, account.windows),
                    )
                    for w in specs
                    if _applies(w, direction)
                )
                base = _Route(spec.account, slots, windows)
                probe = Call("-", direction, number)
                full = self._overridden(probe, base, stack)
                queue = queue_policy if direction == "inbound" else None
                routes[(number, direction)] = _Route(spec.account, slots, windows, full, queue)
        settings = stack.gate
        limits = self.limits_for(stack)
        self._loaded = _Loaded(stack, limits, routes, queue_policy, Policy(stack, limits),
                               settings.lease_ttl, stack.outbound.dial_ttl,
                               settings.max_call_duration, settings.mode == "shadow")
        fraction = settings.local_fraction if settings.on_store_error == "admit_local" else None
        if isinstance(self._store, FallbackStore):
            # Kept once made (even with admit_local switched off): its calls still end there.
            self._store.fraction = fraction
        elif fraction is not None:
            self._store = FallbackStore(self._primary, fraction)

    def reload(self, stack: Stack) -> None:
        """Swap in a new stack; every lease and queue entry is kept, disabled keys re-enabled."""
        self._apply(stack)
        self._store.configure(self._loaded.limits)
        self._store.clear_disabled(self.clock())

    def account_of(self, number: str) -> str:
        spec = self.stack.numbers.get(number)
        if spec is None:
            raise UnknownNumberError(
                f"number {number!r} is not in the stack; add it under [numbers] to gate it"
            )
        return spec.account

    # the claim ----------------------------------------------------------------
    def claim_for(self, call: Call, ttl_s: float | None = None) -> Claim:
        """Every slot, key group and window ``call`` needs under the current stack.

        The TTL rules, in one place: an explicit ``ttl_s`` wins; otherwise a lease renews
        to ``lease_ttl``, and an outbound one first lives ``dial_ttl`` (it is taken before
        dialling and must outlast the ring); no TTL exceeds ``max_call_duration``.
        """
        loaded = self._loaded
        route = loaded.routes.get((call.number, call.direction))
        if route is None:
            raise UnknownNumberError(
                f"number {call.number!r} is not in the stack; add it under [numbers] to gate it"
            )
        if call.resources is None and call.providers is None:
            compiled = route.route
            assert compiled is not None
            digest = route.fingerprint(call)
        else:
            compiled = self._overrides(call, route, loaded)
            digest = fingerprint(call)
        first_ttl_s = 0.0
        if ttl_s is not None:
            ttl_s = min(ttl_s, loaded.max_duration_s)
        else:
            ttl_s = loaded.lease_ttl_s
            if call.direction == "outbound":
                first_ttl_s = min(loaded.dial_ttl_s, loaded.max_duration_s)
        # Positional: this runs once per decision and keywords cost measurably more.
        return Claim(
            route.account, call.call_id, call.number, call.direction, call.priority,
            digest, compiled, ttl_s, loaded.max_duration_s,
            route.queue, loaded.force, first_ttl_s,
        )

    def _overrides(self, call: Call, route: _Route, loaded: _Loaded) -> Route:
        """:meth:`_overridden`, memoised per (number, direction, providers, resources)."""
        resources = None if call.resources is None else tuple(call.resources.items())
        ident = (call.number, call.direction, call.providers, resources)
        try:
            parts = loaded.overrides.get(ident)
        except TypeError:  # an unhashable providers list: still a valid request
            return self._overridden(call, route, loaded.stack)
        if parts is None:
            parts = self._overridden(call, route, loaded.stack)
            if len(loaded.overrides) > 10_000:  # never let the memo grow unbounded
                loaded.overrides.clear()
            loaded.overrides[ident] = parts
        return parts

    @staticmethod
    def _overridden(call: Call, route: _Route, stack: Stack) -> Route:
        """The route of a call that names its own providers or resources (or of the
        stack's defaults, for the probe call :meth:`_apply` compiles each route with)."""
        if call.resources is None:
            units = {name: r.per_call for name, r in stack.resources.items()}
        else:
            units = dict(call.resources)
            unknown = sorted(set(units) - set(stack.resources))
            if unknown:
                raise UnknownProviderError(
                    f"resources {unknown} are not in the stack; defined: {sorted(stack.resources)}"
                )
        slots = route.base_slots + tuple(
            SlotNeed(f"resource:{name}", n) for name, n in units.items() if n > 0
        )
        names = stack.required_providers() if call.providers is None else call.providers
        names = tuple(dict.fromkeys(names))  # a pool named twice is still one session
        groups = []
        windows = route.base_windows
        for name in names:
            pool = stack.providers.get(name)
            if pool is None:
                raise UnknownProviderError(
                    f"provider {name!r} is not in the stack; defined: {sorted(stack.providers)}"
                )
            groups.append(KeyGroup(name, pool.keys))
            windows += tuple(
                window_key("provider", name, w) for w in pool.windows
                if _applies(w, call.direction)
            )
        return Route(slots, tuple(groups), windows)

    # primitives -----------------------------------------------------------------
    def acquire(self, call: Call, *, ttl_s: float | None = None) -> Decision:
        """May ``call`` start now? Idempotent on (account, call_id); see DESIGN.md."""
        claim = self.claim_for(call, ttl_s)
        now = self.clock()
        policy = self._loaded.policy
        try:
            verdict = self._store.acquire(claim, now)
        except StoreError as exc:
            log.error("store unavailable for %s: %s", call.call_id, exc)
            return policy.store_down(call, self._rng)
        decision, final_key = policy.decide(call, verdict, now, self._rng)
        if final_key is not None:
            self._remember_rejection(call, final_key, now)
        elif decision.reason is Reason.SHADOW:
            log.warning("shadow: %s would be refused at %s %s",
                        call.call_id, decision.layer, decision.scope)
        return decision

    def renew(
        self, call_id: str, account: str | None = None, ttl_s: float | None = None
    ) -> RenewResult:
        """Push a lease's expiry to now + its TTL (never past ``max_call_duration``).

        ``ttl_s`` replaces the lease's TTL from now on (capped at ``max_call_duration``);
        without it the lease keeps its TTL, which ends an outbound lease's dialling phase.
        """
        if ttl_s is not None:
            ttl_s = min(ttl_s, self._loaded.max_duration_s)
        outcome = self._store.renew(account, call_id, ttl_s, self.clock())
        lease = lease_of(outcome.record) if outcome.status == "renewed" else None
        return RenewResult(RenewStatus(outcome.status), lease)

    def release(self, call_id: str, account: str | None = None) -> ReleaseResult:
        """Free a lease, or cancel a queued call; idempotent."""
        released, cancelled = self._store.release(account, call_id, self.clock())
        return _RELEASE_RESULTS[bool(released), bool(cancelled)]

    def report_provider_error(
        self, provider: str, key: str, status: int, retry_after_s: float | None = None
    ) -> float:
        """A provider answered ``status`` for ``key``: cool it down; returns until when."""
        pool = self.stack.providers.get(provider)
        if pool is None or key not in pool.keys:
            raise UnknownProviderError(
                f"{provider}:{key} is not in the stack; providers: "
                + ", ".join(f"{n} {list(p.keys)}" for n, p in self.stack.providers.items())
            )
        if status in (401, 403):
            until = DISABLED
        elif status == 429 or 500 <= status <= 599:
            rest = pool.cooldown if retry_after_s is None else retry_after_s
            until = self.clock() + rest
        else:
            raise ValueError(
                f"status {status} does not cool a key down; accepted: 401, 403 (disable until "
                "reload), 429 or 500-599 (cool down for retry_after_s, else the pool's cooldown)"
            )
        self._store.cooldown(provider, key, until)
        log.info("provider key %s:%s status %s: cooling until %s", provider, key, status, until)
        return until

    def expire(self) -> int:
        """Expire due leases and stale queue entries now (the service's reaper calls this)."""
        return self._store.expire(self.clock())

    def ping(self) -> None:
        self._store.ping()

    def usage(self) -> dict[str, Any]:
        """The usage document of DESIGN.md ("The usage document")."""
        now = self.clock()
        snap = self._store.usage(now)
        layers = []
        for item in snap.layers:
            layer, scope = split_key(item.key)
            layers.append({"layer": str(layer), "scope": scope, "in_use": item.in_use,
                           "cap": item.cap, "queued": item.queued})
        return {
            "now": now,
            "ttl_s": self.stack.gate.lease_ttl,
            "leases": snap.leases,
            "expired_total": snap.expired_total,
            "layers": layers,
            "windows": [
                {"scope": split_key(w.key)[1], "count": w.count, "limit": w.limit,
                 "period_s": w.period_s}
                for w in snap.windows
            ],
            "cooldowns": [
                {"scope": scope, "until": None if math.isinf(until) else until}
                for scope, until in snap.cooldowns
            ],
        }

    def queue(self) -> list[dict[str, Any]]:
        """Every queued call, per number in queue order."""
        now = self.clock()
        snap = self._store.usage(now)
        entries = []
        ranks: dict[str, int] = {}
        for record in sorted(snap.queue, key=lambda r: (r.number, -r.priority, r.seq)):
            ranks[record.number] = ranks.get(record.number, 0) + 1
            entries.append({
                "call_id": record.call_id, "account": record.account, "number": record.number,
                "priority": record.priority, "position": ranks[record.number],
                "waited_s": now - record.enqueued_at, "deadline": record.deadline,
            })
        return entries

    # final rejections -------------------------------------------------------------
    def _remember_rejection(self, call: Call, key: str, now: float) -> None:
        """Tombstone a final rejection so retries of the same id replay it."""
        try:
            self._store.tombstone(Record(
                account=self.account_of(call.number), call_id=call.call_id, state="rejected",
                fingerprint=fingerprint(call), number=call.number, direction=call.direction,
                reason=Reason.MAX_ATTEMPTS, blocker_key=key,
                until=now + self.stack.gate.tombstone_ttl,
            ))
        except StoreError as exc:  # the rejection stands; only its replay is lost
            log.warning("could not record the rejection of %s: %s", call.call_id, exc)


# Results are immutable values: one of each, shared, rather than one built per release.
_RELEASE_RESULTS = {(released, cancelled): ReleaseResult(released, cancelled)
                    for released in (False, True) for cancelled in (False, True)}


def fingerprint(call: Call) -> str:
    """What makes two requests "the same call" (``attempt`` excluded: retries reuse the id)."""
    resources: Mapping[str, int] = call.resources or {}
    body = repr((call.direction, call.number, call.remote, call.priority,
                 call.providers, sorted(resources.items())))
    return hashlib.blake2b(body.encode(), digest_size=12).hexdigest()
