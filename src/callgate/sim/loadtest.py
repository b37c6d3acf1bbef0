"""A live load test: the simulator's traffic, in compressed real time, against a gate over HTTP.

Picture a rehearsal with a stopwatch running ``K`` times too fast: the gate under test
runs ``serve --time-scale K`` and every caller here sleeps ``1/K`` of the simulated time
(handle times, patience, polls every ``poll_interval_s / K``, retries after
``retry_after_s / K``, renewals every ``ttl / (3K)``), so windows, waits and TTLs keep
their meaning while a simulated hour passes in ``3600 / K`` seconds.

Every call goes through :class:`~callgate.client.GateClient`: the admission loop asks
with ``acquire`` (polling a queued call, retrying an outbound one with ``attempt + 1``),
and an admitted call holds its lease inside ``client.call(...)``, which replays the
admission, renews in the background and always releases. The tester judges the gate with
its own record, never the gate's word:

- **silent failures**: requests that got no explicit decision (a timeout, a network error,
  an HTTP 5xx, an answer the client cannot read);
- **cap violations**: admissions that lifted the client-observed concurrency of a scope
  above its cap. Each lease's *inner* interval (from the admit answer to just before the
  release request) surely lies inside the time the gate counted it, so overlapping
  inner intervals above a cap prove the gate over-admitted.

It only sends traffic to the URL given, at most ``max_in_flight`` calls at once, for
``duration_s`` wall seconds of arrivals plus ``grace_s`` for calls in flight; then it
cancels what is left and releases every lease it still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from callgate.client import (
    CallNotAdmitted,
    GateClient,
    GateDecision,
    GateHTTPError,
    GateProtocolError,
    GateUnavailableError,
)
from callgate.errors import CallConflictError, UnknownNumberError
from callgate.model import Outcome, Reason
from callgate.sim.results import (
    LoadFindings,
    RunResult,
    ScopeRow,
    Tally,
    Violation,
    chart_series,
    scope_rows,
)
from callgate.sim.scopes import Held, ScopeMap
from callgate.sim.stats import Levels, Summary, max_overlap
from callgate.sim.traffic import KeyFault, PlannedCall, Traffic
from callgate.sim.transport import TimingTransport

Progress = Callable[[float, int], None]
"""Called about once a second with the fraction of arrivals done and the calls in flight."""


@dataclass(frozen=True)
class LoadOptions:
    """How hard and how long to push (wall seconds unless the name says simulated)."""

    url: str
    token: str | None = None
    speed: float = 1.0
    duration_s: float = 60.0
    grace_s: float = 30.0
    max_in_flight: int = 500
    seed: int = 0
    timeout_s: float = 5.0
    poll_interval_s: float = 2.0  # simulated seconds between two polls of a queued call
    usage_every_s: float = 0.5
    transport: httpx.AsyncBaseTransport | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        checks = (("speed", self.speed), ("duration_s", self.duration_s),
                  ("timeout_s", self.timeout_s), ("poll_interval_s", self.poll_interval_s),
                  ("usage_every_s", self.usage_every_s))
        for name, value in checks:
            if not 0 < value < math.inf:
                raise ValueError(f"{name} = {value!r}: expected a finite number > 0")
        if self.grace_s < 0 or self.max_in_flight < 1:
            raise ValueError(f"grace_s = {self.grace_s!r} must be >= 0 and max_in_flight = "
                             f"{self.max_in_flight!r} >= 1")


@dataclass
class _Interval:
    start: float  # wall (monotonic) seconds
    end: float
    held: Held


class LoadTest:
    """One load test of ``traffic`` against the gate at ``options.url`` (see the module doc)."""

    def __init__(self, traffic: Traffic, scopes: ScopeMap, options: LoadOptions, *,
                 ttl_s: float, config: str | None = None,
                 progress: Progress | None = None) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0 simulated seconds, got {ttl_s}")
        self.traffic, self.scopes, self.options = traffic, scopes, options
        self.ttl_s, self.config = ttl_s, config
        self.k = options.speed
        self.end_sim_s = options.duration_s * options.speed
        self.rng = random.Random(options.seed)
        self.run_id = os.urandom(4).hex()  # fresh call ids per run; the traffic is the seed's
        self.tally = Tally(self.end_sim_s)
        self.findings = LoadFindings(speed=options.speed, scopes_exact=scopes.exact)
        self.intervals: list[_Interval] = []
        self.server_peak: dict[str, int] = {}
        self.cooldowns: list[tuple[str, float, float]] = []
        self._dead: list[tuple[str, _Interval]] = []
        self._progress = progress
        self._t0 = 0.0
        self.transports = [self._transport(options.max_in_flight + 8), self._transport(4)]

    def _transport(self, connections: int) -> TimingTransport:
        inner = self.options.transport or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=connections))
        return TimingTransport(inner)

    # clocks -------------------------------------------------------------------------------
    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _sim(self, wall: float) -> float:
        """Simulated seconds since the start for a wall (loop) time."""
        return (wall - self._t0) * self.k

    # the run -------------------------------------------------------------------------------
    async def run(self) -> RunResult:
        """Send the traffic, wait the grace, clean up, and return the findings."""
        opts = self.options
        client = GateClient(opts.url, opts.token, timeout_s=opts.timeout_s,
                            transport=self.transports[0],
                            poll_interval_s=opts.poll_interval_s / self.k)
        headers = {"Authorization": f"Bearer {opts.token}"} if opts.token else {}
        # Usage samples and key reports go through their own small pool, so they never
        # wait behind the calls' requests (and the client has no method for them).
        admin = httpx.AsyncClient(base_url=opts.url, headers=headers, timeout=opts.timeout_s,
                                  transport=self.transports[1])
        async with client, admin:
            self._t0 = self._now()
            background = [asyncio.create_task(self._watch_usage(admin))]
            background += [asyncio.create_task(self._fault(admin, f))
                           for f in self.traffic.faults]
            calls: set[asyncio.Task[None]] = set()
            try:
                await self._arrivals(client, calls)
                if calls:
                    await asyncio.wait(calls, timeout=opts.grace_s)
            finally:
                for task in (*calls, *background):
                    task.cancel()
                await asyncio.gather(*calls, *background, return_exceptions=True)
                await self._release_dead(client)
            stopped = self._now()
        return self._result(stopped)

    async def _arrivals(self, client: GateClient, calls: set[asyncio.Task[None]]) -> None:
        traffic, opts = self.traffic, self.options
        t_sim = traffic.next_arrival(0.0, self.rng)
        seq = 0
        last_report = self._t0
        while t_sim < self.end_sim_s:
            delay = self._t0 + t_sim / self.k - self._now()
            if delay > 0:
                await asyncio.sleep(delay)
            plan = traffic.draw(seq, t_sim, self.rng)
            seq += 1
            if len(calls) >= opts.max_in_flight:
                self.findings.dropped += 1
            else:
                task = asyncio.create_task(self._call(client, plan))
                calls.add(task)
                task.add_done_callback(calls.discard)
            if self._progress is not None and self._now() - last_report >= 1.0:
                last_report = self._now()
                self._progress(min(1.0, t_sim / self.end_sim_s), len(calls))
            t_sim = traffic.next_arrival(t_sim, self.rng)
        if self._progress is not None:
            self._progress(1.0, len(calls))

    # one call ------------------------------------------------------------------------------
    async def _call(self, client: GateClient, plan: PlannedCall) -> None:
        call_id = f"lt-{self.run_id}-{plan.seq}"
        arrived = self._now()
        batch = self.tally.arrived(plan.arrival_s, plan.direction)
        try:
            answer = await self._admit(client, call_id, plan, batch, arrived)
        except asyncio.CancelledError:
            self.tally.counts.unfinished += 1
            raise
        if answer is None:
            return
        admitted = self._now()
        decision, attempt = answer
        assert decision.lease is not None
        held = self.scopes.held(plan.number, decision.lease.keys, decision.lease.account)
        if plan.dies_after_s is not None:
            await self._die(client, call_id, plan, admitted, held)
            return
        await self._hold(client, call_id, plan, attempt, admitted, held)

    async def _ask(self, client: GateClient, call_id: str, plan: PlannedCall,
                   attempt: int) -> GateDecision | None:
        """One acquire; None when it got no decision (the transport counts timeouts,
        network errors and 5xx; an unreadable answer is counted here)."""
        try:
            return await client.acquire(call_id, plan.direction, plan.number, attempt=attempt)
        except GateUnavailableError:
            pass
        except GateProtocolError:
            self.findings.failures_by_kind["acquire: unreadable answer"] += 1
        except (CallConflictError, UnknownNumberError, GateHTTPError):
            self.findings.client_errors += 1
        return None

    async def _admit(self, client: GateClient, call_id: str, plan: PlannedCall, batch: int,
                     arrived: float) -> tuple[GateDecision, int] | None:
        """Ask, poll and retry until admitted (the decision and attempt) or not (None)."""
        state: dict[str, float] = {}
        try:
            return await self._admit_loop(client, call_id, plan, batch, arrived, state)
        except asyncio.CancelledError:
            if "deadline" in state:  # cut off while on hold: leave no queue entry behind
                await self._cancel(client, call_id)
            raise

    async def _admit_loop(self, client: GateClient, call_id: str, plan: PlannedCall,
                          batch: int, arrived: float, state: dict[str, float]
                          ) -> tuple[GateDecision, int] | None:
        k, attempt = self.k, 1
        deadline: float | None = None  # while queued: when the caller hangs up (wall)
        for _ in range(100_000):  # bounded: every path below sleeps or returns
            decision = await self._ask(client, call_id, plan, attempt)
            if decision is None:
                if deadline is not None:
                    await self._cancel(client, call_id)
                return None
            now = self._now()
            if decision.outcome is Outcome.ADMITTED:
                self.tally.admitted(batch, plan.direction, (now - arrived) * k,
                                    deadline is not None,
                                    decision.reason is Reason.PROMOTED)
                return decision, attempt
            if decision.outcome is Outcome.QUEUED:
                if deadline is None:
                    self.tally.queued(batch, decision)
                    deadline = state["deadline"] = now + plan.patience_s / k
                if now >= deadline:
                    await self._cancel(client, call_id)
                    self.tally.abandoned(batch, (now - arrived) * k)
                    return None
                await asyncio.sleep(min(self.options.poll_interval_s / k, deadline - now))
            elif decision.outcome is Outcome.RETRY_LATER:
                self.tally.retried(decision)
                attempt += 1
                await asyncio.sleep((decision.retry_after_s or 0.0) / k)
            else:
                self.tally.rejected(batch, decision)
                return None
        raise AssertionError("unreachable: the gate bounds waits (max_wait) and retries")

    async def _cancel(self, client: GateClient, call_id: str) -> None:
        with contextlib.suppress(Exception):  # counted by the transport if it failed
            await client.release(call_id)

    async def _hold(self, client: GateClient, call_id: str, plan: PlannedCall, attempt: int,
                    admitted: float, held: Held) -> None:
        """Talk for the handle time inside ``client.call`` (renewing), then release."""
        renew_every = self.ttl_s / (3 * self.k)
        end = admitted
        try:
            # The same body replays the admission (attempt is not part of a call's identity).
            async with client.call(call_id, plan.direction, plan.number, attempt=attempt,
                                   wait=False, renew_interval_s=renew_every) as lease:
                try:
                    left = plan.handle_s / self.k - (self._now() - admitted)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lease.lost.wait(), timeout=max(0.0, left))
                    if lease.lost.is_set():
                        # Surely held until the last confirmed renewal plus a TTL (less a
                        # margin for clock skew), not until the loss was noticed: a starved
                        # renewal lets the gate expire the lease, and then admit another.
                        # Never renewed: no moment after the answer is sure (a promoted
                        # lease's TTL ran from its promotion, before the poll that saw it).
                        self.tally.counts.lost += 1
                        if lease.confirmed_at is not None:
                            end = max(admitted, min(
                                self._now() - 2 * renew_every,
                                lease.confirmed_at + 0.9 * self.ttl_s / self.k))
                    else:
                        self.tally.counts.completed += 1
                        end = self._now()
                except asyncio.CancelledError:
                    end = self._now()
                    self.tally.counts.unfinished += 1
                    raise
        except CallNotAdmitted:
            self.tally.counts.lost += 1  # the lease was gone before the replay
        except GateUnavailableError:
            pass  # counted by the transport
        except GateProtocolError:
            self.findings.failures_by_kind["acquire: unreadable answer"] += 1
        except (CallConflictError, UnknownNumberError, GateHTTPError):
            self.findings.client_errors += 1
        finally:
            self.intervals.append(_Interval(admitted, end, held))

    async def _die(self, client: GateClient, call_id: str, plan: PlannedCall,
                   admitted: float, held: Held) -> None:
        """A worker that crashes ``dies_after_s`` into the call: renews until then, then
        never speaks again; the gate frees its slots when the lease expires."""
        assert plan.dies_after_s is not None
        self.tally.counts.died += 1
        interval = _Interval(admitted, admitted, held)
        self.intervals.append(interval)
        self._dead.append((call_id, interval))
        renew_every = self.ttl_s / (3 * self.k)
        death = admitted + plan.dies_after_s / self.k
        confirmed = admitted  # the last moment the lease was surely renewed (request sent)
        try:
            while self._now() + renew_every < death:
                await asyncio.sleep(renew_every)
                sent = self._now()
                try:
                    await client.renew(call_id)
                except (GateUnavailableError, GateProtocolError, GateHTTPError):
                    break
                confirmed = sent
        finally:
            # Held surely until the last renewal plus a TTL (less a margin for clock skew).
            interval.end = confirmed + 0.9 * self.ttl_s / self.k

    async def _release_dead(self, client: GateClient) -> None:
        """Release the crashed workers' leases (most have expired): leave nothing behind."""
        for call_id, interval in self._dead:
            interval.end = min(interval.end, self._now())
            with contextlib.suppress(Exception):
                result = await client.release(call_id)
                self.findings.released_at_end += int(result.get("released", False))

    # around the calls ------------------------------------------------------------------------
    async def _fault(self, http: httpx.AsyncClient, fault: KeyFault) -> None:
        """Report the key's 429 at the fault's start, and again each time it comes back."""
        await asyncio.sleep(max(0.0, fault.start_s / self.k - (self._now() - self._t0)))
        while self._sim(self._now()) < min(fault.end_s, self.end_sim_s):
            started = self._sim(self._now())
            with contextlib.suppress(httpx.HTTPError):
                await http.post(f"/v1/providers/{fault.provider}/keys/{fault.key}/errors",
                                json={"status": 429, "retry_after_s": fault.retry_after_s})
            self.cooldowns.append((fault.scope, started, started + fault.retry_after_s))
            await asyncio.sleep(fault.retry_after_s / self.k)

    async def _watch_usage(self, http: httpx.AsyncClient) -> None:
        """Sample ``GET /v1/usage`` for the gate's own peaks (shown beside the client's)."""
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                response = await http.get("/v1/usage")
                if response.status_code == 200:
                    for row in response.json().get("layers", []):
                        key = f"{row['layer']}:{row['scope']}"
                        self.server_peak[key] = max(self.server_peak.get(key, 0), row["in_use"])
            await asyncio.sleep(self.options.usage_every_s)

    # the findings ------------------------------------------------------------------------------
    def _result(self, stopped: float) -> RunResult:
        findings, tally = self.findings, self.tally
        findings.wall_s = stopped - self._t0
        latency: defaultdict[str, list[float]] = defaultdict(list)
        for transport in self.transports:
            findings.failures_by_kind.update(transport.failures)
            for kind, values in transport.latency_ms.items():
                latency[kind] += values
        findings.silent_failures = sum(findings.failures_by_kind.values())
        findings.latency_ms = {kind: Summary.of(values) for kind, values in sorted(latency.items())}
        span_s = max(self._sim(stopped), self.end_sim_s)
        levels = Levels(self.scopes.caps, 0.0, span_s)
        per_scope: defaultdict[int, list[tuple[float, float, int]]] = defaultdict(list)
        for item in self.intervals:
            if item.end <= item.start:
                continue  # no moment at which the lease was surely held
            start, end = self._sim(item.start), self._sim(item.end)
            scopes = tuple((i, units) for key, units in item.held
                           if (i := levels.index(key)) is not None)
            levels.change(start, scopes, +1)
            levels.change(end, scopes, -1)
            for i, units in scopes:
                per_scope[i].append((start, end, units))
        levels.finish()
        rows: list[ScopeRow] = []
        for row in scope_rows(levels, tally.refusals):
            i = levels.index(row.key)
            assert i is not None
            peak, over = max_overlap(per_scope.get(i, ()), row.cap)
            if peak > row.cap:
                findings.violations.append(Violation(row.key, row.cap, peak, over))
                findings.cap_violations += over
            rows.append(ScopeRow(**{**row.__dict__, "server_peak": self.server_peak.get(row.key),
                                    "over_cap": over}))
        result = RunResult(
            kind="loadtest", config=self.config, seed=self.options.seed,
            traffic=self.traffic.describe(), duration_s=span_s, counts=tally.counts,
            waits=tally.summaries(), estimates=tally.estimates(), scopes=rows,
            refusals=tally.refusals, bucket_times=levels.bucket_times(),
            queue_waits=tally.queue_wait_sample(), cooldowns=self.cooldowns,
            perf={"wall_s": findings.wall_s,
                  "requests": sum(len(v) for v in latency.values())},
            findings=findings,
        )
        result.series = chart_series(result, levels)
        return result

