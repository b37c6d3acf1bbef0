"""Prometheus metrics for one app: what the store holds, read at scrape time, and what the
edges answered, counted as it happens.

Occupancy (slots in use and caps per layer and scope, queue lengths, leases, windows,
keys cooling or disabled) is read from ``gate.usage()`` by a custom collector each time
``/metrics`` is scraped, so there is no second set of books that could drift from the
store's. Events (decisions, queue waits, store errors, key cooldowns) are counted by this
process's edges; lease expiries are counted by the store itself (read at scrape time like
the gauges).

**Several gates on one store.** The store-wide series (marked *store* below) are the
store's truth, and every process that exports them (each gate of a fleet, any edge
process built on :class:`Metrics`) exports the same values: four leases on one Redis are
``callgate_leases 4`` on every gate. Aggregate them across processes with ``max`` (``max
by (layer, scope) (callgate_slots_in_use)``, ``max(callgate_leases)``), never ``sum``,
which would count them once per gate. The per-process series (marked *process*) count
what that process answered and add up with ``sum``. The example dashboard and alert rules
follow this rule.

Each app owns its :class:`prometheus_client.CollectorRegistry`: tests build many apps,
and two gates in one process never mix their numbers.

    metric                              kind       labels                      across gates
    callgate_slots_in_use               gauge      layer, scope, account       store: max
    callgate_slots_cap                  gauge      layer, scope, account       store: max
    callgate_queue_length               gauge      number, account             store: max
    callgate_leases                     gauge                                  store: max
    callgate_window_events              gauge      scope                       store: max
    callgate_window_limit               gauge      scope                       store: max
    callgate_provider_keys_cooling      gauge      provider                    store: max
    callgate_provider_key_disabled      gauge      provider, key (1: 401/403)  store: max
    callgate_lease_expiries_total       counter    (workers that never released)  store: max
    callgate_store_up                   gauge      (0: this scrape's read failed) process: min
    callgate_decisions_total            counter    outcome, layer, reason      process: sum
    callgate_queue_polls_total          counter    (repeated polls on hold)    process: sum
    callgate_queue_wait_seconds         histogram  outcome = promoted|rejected|abandoned  sum
    callgate_store_errors_total         counter    source = request|decision|reaper|   sum
                                                   scrape|stream
    callgate_provider_cooldowns_total   counter    provider, key, kind = cooldown|disabled  sum

``account`` is the account owning a number or the account itself; it is empty (no
label) for trunks, provider pools and resources, which accounts share.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from callgate.errors import StoreError
from callgate.gate import Gate
from callgate.model import Decision, Layer, Outcome, Reason, ReleaseResult
from callgate.service.activity import NO_LAYER, Activity

WAIT_BUCKETS_S = (1.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)
MAX_TRACKED_WAITS = 100_000  # past this, stale entries are swept on every new one


@dataclass
class _Wait:
    first_s: float  # when this edge first answered "queued" (gate clock, epoch seconds)
    last_s: float  # the latest poll


class Metrics:
    """The metrics of one app; the edges call :meth:`decided`, :meth:`released` and so on."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.registry = CollectorRegistry()
        registry = self.registry
        # First, so that a scrape's own findings (a store error, abandoned waits) are
        # counted before the counters are read in the same scrape.
        registry.register(_UsageCollector(self))
        self._waits: dict[tuple[str, str], _Wait] = {}
        self._lock = threading.Lock()
        # The headroom page's recent decisions, fed from the same count as the counters.
        self.activity = Activity(gate.clock)
        self.decisions = Counter(
            "callgate_decisions", "Decisions answered, by outcome and the layer and reason that "
            "decided (repeated polls of a call on hold are in callgate_queue_polls_total).",
            ["outcome", "layer", "reason"], registry=registry)
        self._decision_counters: dict[tuple[Outcome, Layer | None, Reason], Counter] = {}
        self.queue_polls = Counter(
            "callgate_queue_polls", "Repeated polls of a call already on hold at this edge.",
            registry=registry)
        self.queue_wait = Histogram(
            "callgate_queue_wait_seconds", "Time from a call's first 'queued' answer to its "
            "promotion, rejection (max_wait) or abandonment (hang-up, or polls stopped).",
            ["outcome"], buckets=WAIT_BUCKETS_S, registry=registry)
        self.store_errors = Counter(
            "callgate_store_errors", "Store failures seen by this process, by where.",
            ["source"], registry=registry)
        self.cooldowns = Counter(
            "callgate_provider_cooldowns", "Provider key reports that cooled (429/5xx) or "
            "disabled (401/403) a key.", ["provider", "key", "kind"], registry=registry)

    # events from the edges --------------------------------------------------------------
    def decided(self, decision: Decision, account: str) -> bool:
        """Count one decision for a call of ``account``; True when it is a repeated hold poll."""
        key = (account, decision.call_id)
        if decision.outcome is not Outcome.QUEUED and key not in self._waits:
            # The common case, a call that never waited here: no lock, no clock. (A
            # concurrent decision on the same call id is ordered arbitrarily either way.)
            self._count(decision, account, repeat=False)
            return False
        now = self.gate.clock()
        repeat = False
        waited: tuple[str, float] | None = None
        with self._lock:
            wait = self._waits.get(key)
            if decision.outcome is Outcome.QUEUED:
                if wait is None:
                    if len(self._waits) >= MAX_TRACKED_WAITS:
                        self._sweep(now)
                    self._waits[key] = _Wait(now, now)
                else:
                    wait.last_s = now
                    repeat = True
            elif wait is not None:
                del self._waits[key]
                outcome = "promoted" if decision.outcome is Outcome.ADMITTED else "rejected"
                waited = (outcome, now - wait.first_s)
        if waited is not None:
            self.queue_wait.labels(waited[0]).observe(max(0.0, waited[1]))
        self._count(decision, account, repeat=repeat)
        return repeat

    def _count(self, decision: Decision, account: str, *, repeat: bool) -> None:
        if repeat:
            self.queue_polls.inc()
        else:
            layer = NO_LAYER if decision.layer is None else decision.layer.value
            self.activity.count(account, decision.outcome.value, layer)
            kind = (decision.outcome, decision.layer, decision.reason)
            counter = self._decision_counters.get(kind)
            if counter is None:  # labels() takes a lock and builds a key: once per kind
                counter = self.decisions.labels(decision.outcome.value, layer,
                                                decision.reason.value)
                self._decision_counters[kind] = counter
            counter.inc()
        if decision.reason is Reason.STORE_UNAVAILABLE:
            self.store_errors.labels("decision").inc()

    def released(self, call_id: str, account: str | None, result: ReleaseResult) -> None:
        """A release; one that cancelled a queued call ends that call's wait as abandoned."""
        if not result.cancelled:
            return
        now = self.gate.clock()
        with self._lock:
            keys = [k for k in self._waits if k[1] == call_id and account in (None, k[0])]
            waits = [self._waits.pop(k) for k in keys]
        for wait in waits:
            self.queue_wait.labels("abandoned").observe(max(0.0, now - wait.first_s))

    def store_error(self, source: str) -> None:
        self.store_errors.labels(source).inc()

    def cooled(self, provider: str, key: str, *, disabled: bool) -> None:
        self.cooldowns.labels(provider, key, "disabled" if disabled else "cooldown").inc()

    def render(self) -> bytes:
        """The text exposition of every metric (what ``GET /metrics`` serves)."""
        return generate_latest(self.registry)

    # waits of callers who went away without a word ---------------------------------------
    def sweep(self) -> None:
        """End the waits of calls not polled within the stack's ``poll_timeout`` (abandoned)."""
        now = self.gate.clock()
        with self._lock:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        timeout = self.gate.stack.gate.poll_timeout
        gone = [(k, w) for k, w in self._waits.items() if now - w.last_s > timeout]
        for key, wait in gone:
            del self._waits[key]
            self.queue_wait.labels("abandoned").observe(max(0.0, wait.last_s - wait.first_s))


class _UsageCollector(Collector):
    """Occupancy gauges from one ``gate.usage()`` read per scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return ()  # registering must not read the store

    def collect(self) -> Iterable[Metric]:
        metrics = self.metrics
        metrics.sweep()
        up = GaugeMetricFamily("callgate_store_up",
                               "1 when this scrape could read the store's usage, else 0.")
        try:
            usage = metrics.gate.usage()
        except StoreError:
            metrics.store_error("scrape")
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        stack = metrics.gate.stack
        in_use = GaugeMetricFamily("callgate_slots_in_use", "Slots held, per layer and scope.",
                                   labels=["layer", "scope", "account"])
        cap = GaugeMetricFamily("callgate_slots_cap", "Most slots a scope may hold at once.",
                                labels=["layer", "scope", "account"])
        queue = GaugeMetricFamily("callgate_queue_length", "Calls on hold, per dialled number.",
                                  labels=["number", "account"])
        for row in usage["layers"]:
            layer, scope = row["layer"], row["scope"]
            account = scope if layer == "account" else ""
            if layer == "number":
                spec = stack.numbers.get(scope)
                account = "" if spec is None else spec.account
            in_use.add_metric([layer, scope, account], row["in_use"])
            cap.add_metric([layer, scope, account], row["cap"])
            if layer == "number":
                queue.add_metric([scope, account], row["queued"])
        leases = GaugeMetricFamily("callgate_leases", "Leases held (admitted calls).",
                                   value=usage["leases"])
        # Counted by the store whichever process expired the lease (a request's
        # housekeeping or the reaper), so it is the same on every gate of one store.
        expiries = CounterMetricFamily(
            "callgate_lease_expiries", "Leases that expired unreleased: each is a worker that "
            "neither renewed nor released its call.", value=usage["expired_total"])
        events = GaugeMetricFamily("callgate_window_events",
                                   "Admissions counted in a rate window now.", labels=["scope"])
        limit = GaugeMetricFamily("callgate_window_limit", "Most admissions a window allows.",
                                  labels=["scope"])
        for window in usage["windows"]:
            events.add_metric([window["scope"]], window["count"])
            limit.add_metric([window["scope"]], window["limit"])
        cooling_by = dict.fromkeys(stack.providers, 0)
        disabled_keys: set[str] = set()
        for item in usage["cooldowns"]:
            provider = str(item["scope"]).partition(":")[0]
            cooling_by[provider] = cooling_by.get(provider, 0) + 1
            if item["until"] is None:  # 401/403: out until a reload
                disabled_keys.add(str(item["scope"]))
        cooling = GaugeMetricFamily("callgate_provider_keys_cooling",
                                    "Keys of a provider pool cooling down or disabled now.",
                                    labels=["provider"])
        for provider, count in cooling_by.items():
            cooling.add_metric([provider], count)
        disabled = GaugeMetricFamily(
            "callgate_provider_key_disabled", "1 while a key is disabled (the provider answered "
            "401/403) until the next reload, else 0.", labels=["provider", "key"])
        for provider, pool in stack.providers.items():
            for key in pool.keys:
                disabled.add_metric([provider, key], int(f"{provider}:{key}" in disabled_keys))
        return [up, in_use, cap, queue, leases, expiries, events, limit, cooling,
                disabled]
