"""A discrete-event simulation of a day of calls, in virtual time, through the real gate.

Think of a clock on the wall that jumps from one moment something happens to the next:
a phone rings, a conversation ends, a caller on hold checks back, a caller gives up, a
provider key starts answering 429. Every such moment is an event in a heap keyed by
``(time, kind, sequence)`` (SimPy's rule: ties break the same way on every run); the
loop pops the earliest, sets the gate's clock to it and acts, and acting schedules later
events. The gate is the real :class:`~callgate.gate.Gate` on a
:class:`~callgate.stores.memory.MemoryStore`; only its clock is ours.

- a call arrives and asks (``acquire``): admitted, it talks for its handle time then
  ``release``\\ s; queued, it polls every ``poll_interval_s`` and hangs up (``release``,
  which cancels) when its patience runs out; ``retry_later``, it asks again after
  ``retry_after_s`` with ``attempt + 1``; rejected, it is counted by reason.
- a queued caller is promoted inside another call's release; it learns so at its next
  poll, but its lease (and its conversation) started at the promotion.
- healthy calls renew just before their lease would expire (one renewal per TTL);
  a dying worker stops renewing, and its slots come back when the lease expires (an
  ``expire`` event then stands in for the service's reaper).

The simulator keeps its own record of who holds what (:class:`~callgate.sim.stats.Levels`)
rather than asking the gate; that record gives peaks, time-weighted means and time at cap.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from callgate.config import Stack
from callgate.gate import Gate
from callgate.model import Call, Lease, Outcome, Reason, RenewStatus
from callgate.sim.results import RunResult, Tally, chart_series, scope_rows
from callgate.sim.scopes import ScopeMap
from callgate.sim.stats import Levels, Scopes
from callgate.sim.traffic import KeyFault, PlannedCall, Traffic
from callgate.stores.memory import MemoryStore
from callgate.testing import FakeClock

EPOCH0 = 1_800_000_000.0 - 1_800_000_000.0 % 86_400.0
"""Virtual time starts at a UTC midnight, so hour 0 of a profile is hour 0 of the day."""

# Event kinds double as the tie-break priority: at one instant, ends free slots before
# anything asks for them, and arrivals come last.
_END, _DIE, _EXPIRE, _FAULT, _RENEW, _ABANDON, _POLL, _RETRY, _ARRIVAL = range(9)
# Call states.
_ASKING, _QUEUED, _ACTIVE, _DONE = range(4)


class _SimCall:
    """One call in flight (mutable; the simulator's own bookkeeping)."""

    __slots__ = ("account", "batch", "call", "expires", "held", "plan", "state", "stop_at")
    expires: float  # epoch seconds, the gate's clock; every other time is simulated seconds

    def __init__(self, plan: PlannedCall, account: str, batch: int) -> None:
        self.plan = plan
        self.call = Call(f"c{plan.seq}", plan.direction, plan.number)
        self.account = account
        self.batch = batch
        self.state = _ASKING
        self.expires = 0.0
        self.stop_at = 0.0
        self.held: Scopes = ()


@dataclass(frozen=True)
class LeaseRecord:
    """One admission, for tests and audits: when (simulated s), which call, which keys."""

    t_s: float
    call_id: str
    keys: Mapping[str, str]


class Simulator:
    """Runs ``traffic`` for ``duration_s`` simulated seconds against a fresh memory gate.

    ``warmup_s`` of arrivals are left out of the batch-means estimates, which split the
    rest of the run into ``batches`` equal spans of arrival time. ``lease_log``, when
    given, receives a :class:`LeaseRecord` per admission; ``progress`` is called now and
    then with the simulated seconds done.
    """

    def __init__(
        self,
        stack: Stack,
        traffic: Traffic,
        *,
        duration_s: float,
        seed: int = 0,
        poll_interval_s: float = 2.0,
        warmup_s: float = 0.0,
        batches: int = 20,
        buckets: int = 300,
        config: str | None = None,
        lease_log: list[LeaseRecord] | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        if not duration_s > 0:
            raise ValueError(f"duration_s must be > 0 simulated seconds, got {duration_s}")
        if not poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be > 0 seconds, got {poll_interval_s}")
        if not 0 <= warmup_s < duration_s:
            raise ValueError(f"warmup_s = {warmup_s} must be in [0, duration_s = {duration_s})")
        self.stack, self.traffic, self.config = stack, traffic, config
        self.duration_s, self.seed, self.warmup_s = duration_s, seed, warmup_s
        self.poll_s = min(poll_interval_s, stack.gate.poll_timeout / 2)
        # Common random numbers: the traffic has its own stream and the gate (backoff jitter)
        # another, so one seed gives the very same calls on any stack, and two stacks are
        # compared on identical traffic.
        self.rng = random.Random(seed)
        self.gate_rng = random.Random(f"callgate-gate-{seed}")
        self.clock = FakeClock(EPOCH0)
        self.gate = Gate(stack, MemoryStore(Gate.limits_for(stack)), self.clock,
                         rng=self.gate_rng)
        self.scopes = ScopeMap.of_stack(stack)
        # Levels run on the gate's epoch clock: an end and a promotion at one instant then
        # carry the very same float, and the end is applied first.
        self.levels = Levels(self.scopes.caps, EPOCH0, EPOCH0 + duration_s,
                             lag_s=self.poll_s + 1e-3, buckets=buckets)
        self.tally = Tally(duration_s, warmup_s, batches)
        self.counts = self.tally.counts
        self.cooldowns: list[tuple[str, float, float]] = []
        self.lease_log = lease_log
        self._progress = progress
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._held: dict[tuple[str, tuple[tuple[str, str], ...]], Scopes] = {}
        self.decisions = 0
        self.operations = 0
        self.events = 0

    # the event loop --------------------------------------------------------------------
    def _push(self, t_s: float, kind: int, item: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t_s, kind, self._seq, item))

    def run(self) -> RunResult:
        """Play the whole run, drain what is still in flight, and return the findings."""
        if self.events or self.levels.finished:
            raise RuntimeError("a Simulator runs once; build a new one for another run")
        started = time.perf_counter()
        first = self.traffic.next_arrival(0.0, self.rng)
        if first < self.duration_s:
            self._push(first, _ARRIVAL, 0)
        for fault in self.traffic.faults:
            if fault.start_s < self.duration_s:
                self._push(fault.start_s, _FAULT, fault)
        # Past the end no call arrives; the rest drain (a lease lasts at most
        # max_call_duration, a queued call at most max_wait) or are counted unfinished.
        horizon = self.duration_s + self.stack.gate.max_call_duration + self.stack.inbound.max_wait
        heap, clock, levels = self._heap, self.clock, self.levels
        handlers: tuple[Callable[[Any, float], None], ...] = (
            self._on_end, self._on_die, self._on_expire, self._on_fault, self._on_renew,
            self._on_abandon, self._on_poll, self._on_poll, self._on_arrival)
        report_every = 4096
        while heap:
            t_s, kind, _, item = heapq.heappop(heap)
            if t_s > horizon:
                break
            now = clock.now = EPOCH0 + t_s  # never backwards: the heap pops in time order
            levels.advance(now)
            handlers[kind](item, t_s)
            self.events += 1
            if self._progress is not None and self.events % report_every == 0:
                self._progress(min(t_s, self.duration_s))
        self.counts.unfinished = sum(
            1 for _, kind, _, item in heap if isinstance(item, _SimCall)
            and kind in (_END, _DIE, _POLL, _RETRY) and item.state != _DONE)
        levels.finish()
        if self._progress is not None:
            self._progress(self.duration_s)
        return self._result(time.perf_counter() - started)

    # events ------------------------------------------------------------------------------
    def _on_arrival(self, seq: int, now: float) -> None:
        plan = self.traffic.draw(seq, now, self.rng)
        following = self.traffic.next_arrival(now, self.rng)
        if following < self.duration_s:
            self._push(following, _ARRIVAL, seq + 1)
        batch = self.tally.arrived(now, plan.direction)
        c = _SimCall(plan, self.scopes.accounts[plan.number], batch)
        self._ask(c, now)

    def _on_poll(self, c: _SimCall, now: float) -> None:  # a queued poll, or a retry
        if c.state in (_QUEUED, _ASKING):
            self._ask(c, now)

    def _on_abandon(self, c: _SimCall, now: float) -> None:
        if c.state != _QUEUED:
            return
        self._ask(c, now)  # promoted since the last poll? then the caller is on the line
        if c.state != _QUEUED:
            return
        self.gate.release(c.call.call_id, c.account)
        self.operations += 1
        c.state = _DONE
        self.tally.abandoned(c.batch, now - c.plan.arrival_s)

    def _on_end(self, c: _SimCall, now: float) -> None:
        if c.state != _ACTIVE:
            return
        self.gate.release(c.call.call_id, c.account)
        self.operations += 1
        self.levels.change(self.clock.now, c.held, -1)
        c.state = _DONE
        self.counts.completed += 1

    def _on_die(self, c: _SimCall, now: float) -> None:
        if c.state != _ACTIVE:
            return
        c.state = _DONE
        self.counts.died += 1
        self._lease_ends(c, c.expires)

    def _on_expire(self, _: None, now: float) -> None:
        self.gate.expire()
        self.operations += 1

    def _on_renew(self, c: _SimCall, now: float) -> None:
        if c.state != _ACTIVE:
            return
        result = self.gate.renew(c.call.call_id, c.account)
        self.operations += 1
        if result.status is not RenewStatus.RENEWED or result.lease is None:
            c.state = _DONE
            self.counts.lost += 1
            self.levels.change(min(c.expires, self.clock.now), c.held, -1)
            return
        expires = result.lease.expires_at
        if expires <= c.expires:  # max_call_duration reached: the lease ends there
            c.state = _DONE
            self.counts.lost += 1
            self._lease_ends(c, expires)
            return
        c.expires = expires
        self._plan_renewal(c, now, result.lease.ttl_s)

    def _lease_ends(self, c: _SimCall, expires_at: float) -> None:
        """A lease nobody renews ends at ``expires_at`` (epoch): stand in for the reaper."""
        self.levels.change(expires_at, c.held, -1)
        self._push(expires_at - EPOCH0 + 1e-6, _EXPIRE, None)

    def _on_fault(self, fault: KeyFault, now: float) -> None:
        if now >= fault.end_s:
            return
        until = self.gate.report_provider_error(fault.provider, fault.key, 429,
                                                fault.retry_after_s) - EPOCH0
        self.operations += 1
        self.cooldowns.append((fault.scope, now, until))
        if until < fault.end_s:  # the key comes back during the fault: the next 429 at once
            self._push(until, _FAULT, fault)

    # asking the gate ----------------------------------------------------------------------
    def _ask(self, c: _SimCall, now: float) -> None:
        decision = self.gate.acquire(c.call)
        self.decisions += 1
        outcome = decision.outcome
        if outcome is Outcome.ADMITTED:
            assert decision.lease is not None
            self._start(c, decision.lease, now, decision.reason is Reason.PROMOTED)
        elif outcome is Outcome.QUEUED:
            if c.state != _QUEUED:
                c.state = _QUEUED
                self.tally.queued(c.batch, decision)
                if math.isfinite(c.plan.patience_s):
                    self._push(now + c.plan.patience_s, _ABANDON, c)
            self._push(now + self.poll_s, _POLL, c)
        elif outcome is Outcome.RETRY_LATER:
            self.tally.retried(decision)
            c.call = replace(c.call, attempt=c.call.attempt + 1)
            self._push(now + max(decision.retry_after_s or 0.0, 1e-3), _RETRY, c)
        else:
            c.state = _DONE
            self.tally.rejected(c.batch, decision)

    def _start(self, c: _SimCall, lease: Lease, now: float, promoted: bool) -> None:
        admitted_at = lease.admitted_at - EPOCH0
        # Admitted by this very ask: the simulated clock is exact (an answer at arrival
        # waited 0.0, not the epoch clock's round-off); a promotion happened earlier.
        waited = admitted_at - c.plan.arrival_s if promoted else now - c.plan.arrival_s
        self.tally.admitted(c.batch, c.plan.direction, waited, c.state == _QUEUED, promoted)
        ident = (c.plan.number, tuple(lease.keys.items()))
        held = self._held.get(ident)
        if held is None:
            levels = self.levels
            held = tuple((i, units) for key, units in self.scopes.held(c.plan.number, lease.keys)
                         if (i := levels.index(key)) is not None)
            self._held[ident] = held
        c.held = held
        c.state = _ACTIVE
        c.expires = lease.expires_at
        self.levels.change(lease.admitted_at, held, +1)
        if c.plan.dies_after_s is not None:
            c.stop_at = admitted_at + c.plan.dies_after_s
            self._push(max(now, c.stop_at), _DIE, c)
        else:
            c.stop_at = admitted_at + c.plan.handle_s
            self._push(max(now, c.stop_at), _END, c)
        self._plan_renewal(c, now, lease.ttl_s)
        if self.lease_log is not None:
            self.lease_log.append(LeaseRecord(admitted_at, c.call.call_id, dict(lease.keys)))

    def _plan_renewal(self, c: _SimCall, now: float, ttl_s: float) -> None:
        """Renew a tenth of a TTL before expiry, unless the call stops before then."""
        at = c.expires - EPOCH0 - ttl_s / 10
        if at < c.stop_at:
            self._push(max(at, now), _RENEW, c)

    # the findings --------------------------------------------------------------------------
    def _result(self, wall_s: float) -> RunResult:
        levels, tally = self.levels, self.tally
        result = RunResult(
            kind="simulate", config=self.config, seed=self.seed,
            traffic=self.traffic.describe(), duration_s=self.duration_s, counts=tally.counts,
            waits=tally.summaries(), estimates=tally.estimates(),
            scopes=scope_rows(levels, tally.refusals), refusals=tally.refusals,
            bucket_times=levels.bucket_times(), cooldowns=self.cooldowns,
            queue_waits=tally.queue_wait_sample(), warmup_s=self.warmup_s,
            perf={"wall_s": wall_s, "events": self.events, "decisions": self.decisions,
                  "gate_operations": self.decisions + self.operations,
                  "decisions_per_s": self.decisions / wall_s if wall_s > 0 else 0.0},
        )
        result.series = chart_series(result, levels)
        return result

