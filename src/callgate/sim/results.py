"""What a simulation or a load test found: counts, waits, per-scope levels, the bottleneck.

Both tools fill the same :class:`RunResult`; the load tester adds :class:`LoadFindings`
(request latencies and the two numbers that must be zero). :func:`to_document` is the
``--json`` shape.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from callgate.model import Direction, Layer, Reason
from callgate.sim.stats import Estimate, Levels, Summary

CAPPED_LAYERS = ("trunk", "number", "account", "provider", "resource")
# Layers whose refusals say which limit bit (queue_full names the queue, store the store).
LIMIT_LAYERS = (*CAPPED_LAYERS, "window")


@dataclass
class Counts:
    """What happened to the calls that arrived (each call counted once per row).

    ``retried`` counts ``retry_later`` answers (an outbound call may get several);
    ``lost`` leases the gate ended before the call did (``max_call_duration``, a refused
    renewal); ``unfinished`` calls still waiting or talking when the run was cut off.
    """

    arrivals: int = 0
    inbound: int = 0
    outbound: int = 0
    admitted: int = 0
    queued: int = 0
    promoted: int = 0
    abandoned: int = 0
    retried: int = 0
    rejected: int = 0
    completed: int = 0
    died: int = 0
    lost: int = 0
    unfinished: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class ScopeRow:
    """One capped scope over the run: levels are slots held, times simulated seconds."""

    key: str
    layer: str
    scope: str
    cap: int
    peak: int
    mean: float
    at_cap_s: float
    at_cap: float  # fraction of the run
    refusals: int
    server_peak: int | None = None  # load test: the highest in_use the gate reported
    over_cap: int = 0  # load test: admissions that lifted the client's count above cap

    @property
    def utilisation(self) -> float:
        return self.peak / self.cap if self.cap else math.inf


@dataclass(frozen=True)
class Violation:
    """A scope whose client-observed concurrency went above its cap."""

    key: str
    cap: int
    observed: int
    admissions_over: int


@dataclass
class LoadFindings:
    """The load tester's own findings: both counters must be zero for a healthy gate."""

    silent_failures: int = 0
    failures_by_kind: Counter[str] = field(default_factory=Counter)
    cap_violations: int = 0
    violations: list[Violation] = field(default_factory=list)
    latency_ms: dict[str, Summary] = field(default_factory=dict)
    dropped: int = 0  # arrivals not sent: --max-in-flight calls were already running
    client_errors: int = 0  # explicit refusals of a request (4xx other than a decision)
    released_at_end: int = 0
    scopes_exact: bool = True
    speed: float = 1.0
    wall_s: float = 0.0


@dataclass
class RunResult:
    """Everything one run found (times in simulated seconds)."""

    kind: str  # "simulate" or "loadtest"
    config: str | None
    seed: int
    traffic: dict[str, Any]
    duration_s: float
    counts: Counts
    waits: dict[str, Summary]
    estimates: dict[str, Estimate | None]
    scopes: list[ScopeRow]
    refusals: Counter[tuple[str, str, str]]  # (layer, scope, reason) -> decisions
    bucket_times: list[float] = field(default_factory=list)
    series: dict[str, list[int]] = field(default_factory=dict)
    queue_waits: list[float] = field(default_factory=list)  # sorted sample, for the chart
    cooldowns: list[tuple[str, float, float]] = field(default_factory=list)
    perf: dict[str, float] = field(default_factory=dict)
    findings: LoadFindings | None = None
    warmup_s: float = 0.0  # arrivals before this are left out of the estimates

    @property
    def bottleneck(self) -> dict[str, Any] | None:
        """The limit that bit most: most refusals naming it, then most time at its cap."""
        by_scope: Counter[tuple[str, str]] = Counter()
        for (layer, scope, _), n in self.refusals.items():
            if layer in LIMIT_LAYERS:
                by_scope[(layer, scope)] += n
        at_cap = {(row.layer, row.scope): row.at_cap_s for row in self.scopes}
        candidates = set(by_scope) | {k for k, v in at_cap.items() if v > 0}
        if not candidates:
            return None
        layer, scope = max(candidates,
                           key=lambda k: (by_scope.get(k, 0), at_cap.get(k, 0.0), k))
        span = self.duration_s or 1.0
        return {"layer": layer, "scope": scope, "refusals": by_scope.get((layer, scope), 0),
                "time_at_cap": at_cap.get((layer, scope), 0.0) / span}

    def layers(self) -> list[dict[str, Any]]:
        """Per layer: scopes, the busiest scope's utilisation, refusals, most time at cap."""
        out = []
        for layer in CAPPED_LAYERS:
            rows = [row for row in self.scopes if row.layer == layer]
            if not rows:
                continue
            busiest = max(rows, key=lambda r: (r.at_cap_s, r.utilisation, r.refusals))
            out.append({
                "layer": layer, "scopes": len(rows), "busiest": busiest.scope,
                "peak": busiest.peak, "cap": busiest.cap,
                "time_at_cap": max(r.at_cap for r in rows),
                "refusals": sum(r.refusals for r in rows),
            })
        windows = sum(n for (lay, _, _), n in self.refusals.items() if lay == "window")
        if windows:
            out.append({"layer": "window", "scopes": None, "busiest": None, "peak": None,
                        "cap": None, "time_at_cap": None, "refusals": windows})
        return out


class Answer(Protocol):
    """What both testers read from a decision (the gate's, or the HTTP client's)."""

    @property
    def layer(self) -> Layer | None: ...
    @property
    def scope(self) -> str | None: ...
    @property
    def reason(self) -> Reason: ...


WAIT_KINDS = ("inbound", "queued_inbound", "abandoned", "outbound")
"""The waits kept: answered inbound callers, those of them who were queued, callers who
hung up on hold (time until they did), admitted outbound calls (time until admitted)."""

SHARES = ("p_rejected", "p_queued", "p_abandoned")
"""Estimated shares of arrivals; the waits' means are estimated as ``wait_<kind>_s``."""


class Tally:
    """Counts, refusals per scope, waits and per-batch sums, kept as calls progress.

    Arrivals before ``warmup_s`` are left out of the estimates; the rest of ``[warmup_s,
    end_s)`` is cut into ``batches`` equal spans of arrival time, and each outcome (and
    each wait) counts in the batch of its call's arrival. The estimates are ratios of
    sums over the batches (:class:`~callgate.sim.stats.Estimate`).
    """

    def __init__(self, end_s: float, warmup_s: float = 0.0, batches: int = 20) -> None:
        self.counts = Counts()
        self.refusals: Counter[tuple[str, str, str]] = Counter()
        self.waits: dict[str, list[float]] = {kind: [] for kind in WAIT_KINDS}
        self.warmup_s = warmup_s
        self.batches = batches
        self._batch_s = max(end_s - warmup_s, 1e-9) / batches
        self._per_batch = [[0, 0, 0, 0] for _ in range(batches)]  # arrivals, rej, queued, abandoned
        self._batch_waits: dict[str, list[list[float]]] = {
            kind: [[] for _ in range(batches)] for kind in WAIT_KINDS}

    def arrived(self, t_s: float, direction: Direction) -> int:
        """Count an arrival at ``t_s``; returns its batch (-1 in the warm-up)."""
        counts = self.counts
        counts.arrivals += 1
        if direction == "inbound":
            counts.inbound += 1
        else:
            counts.outbound += 1
        if t_s < self.warmup_s:
            return -1
        batch = min(int((t_s - self.warmup_s) / self._batch_s), self.batches - 1)
        self._per_batch[batch][0] += 1
        return batch

    def refused(self, answer: Answer) -> None:
        layer = "" if answer.layer is None else answer.layer.value
        self.refusals[(layer, answer.scope or "", answer.reason.value)] += 1

    def queued(self, batch: int, answer: Answer) -> None:
        self.counts.queued += 1
        self.refused(answer)
        if batch >= 0:
            self._per_batch[batch][2] += 1

    def retried(self, answer: Answer) -> None:
        self.counts.retried += 1
        self.refused(answer)

    def rejected(self, batch: int, answer: Answer) -> None:
        self.counts.rejected += 1
        self.counts.rejected_by_reason[answer.reason.value] += 1
        self.refused(answer)
        if batch >= 0:
            self._per_batch[batch][1] += 1

    def _wait(self, kind: str, batch: int, waited_s: float) -> None:
        # Epoch-clock round-off can make an immediate answer a hair below zero; a wait is
        # never negative (and never prints as -0.0).
        waited_s = max(0.0, waited_s)
        self.waits[kind].append(waited_s)
        if batch >= 0:
            self._batch_waits[kind][batch].append(waited_s)

    def abandoned(self, batch: int, waited_s: float) -> None:
        self.counts.abandoned += 1
        self._wait("abandoned", batch, waited_s)
        if batch >= 0:
            self._per_batch[batch][3] += 1

    def admitted(self, batch: int, direction: Direction, waited_s: float, was_queued: bool,
                 promoted: bool) -> None:
        self.counts.admitted += 1
        if promoted:
            self.counts.promoted += 1
        if direction == "inbound":
            self._wait("inbound", batch, waited_s)
            if was_queued:
                self._wait("queued_inbound", batch, waited_s)
        else:
            self._wait("outbound", batch, waited_s)

    def estimates(self) -> dict[str, Estimate | None]:
        """95% intervals (ratio of sums over the batches) of the shares of arrivals
        rejected, queued and hanging up, and of the mean of every wait."""
        rows = self._per_batch
        found: dict[str, Estimate | None] = {
            name: Estimate.of([(b[column], b[0]) for b in rows])
            for column, name in enumerate(SHARES, start=1)}
        for kind in WAIT_KINDS:
            batches = self._batch_waits[kind]
            every = [w for batch in batches for w in batch]
            found[f"wait_{kind}_s"] = Estimate.of(
                [(math.fsum(batch), len(batch)) for batch in batches],
                total=(math.fsum(every), len(every)))
        return found

    def summaries(self) -> dict[str, Summary]:
        return {name: Summary.of(values) for name, values in self.waits.items()}

    def queue_wait_sample(self, most: int = 1000) -> list[float]:
        """At most ``most`` evenly spaced order statistics of the queued callers' waits."""
        ordered = sorted(self.waits["queued_inbound"])
        if len(ordered) <= most:
            return ordered
        step = (len(ordered) - 1) / (most - 1)
        return [ordered[round(i * step)] for i in range(most)]


def scope_rows(levels: Levels, refusals: Counter[tuple[str, str, str]]) -> list[ScopeRow]:
    """One row per capped scope, from finished levels and the refusals per scope."""
    per_scope: Counter[str] = Counter()
    for (layer, scope, _), n in refusals.items():
        per_scope[f"{layer}:{scope}"] += n
    span = max(levels.end_s - levels.start_s, 1e-9)
    rows = []
    for i, key in enumerate(levels.keys):
        layer, _, scope = key.partition(":")
        rows.append(ScopeRow(key, layer, scope, levels.caps[i], levels.peak[i], levels.mean(i),
                             levels.at_cap_s[i], levels.at_cap_s[i] / span, per_scope[key]))
    return rows


def chart_series(result: RunResult, levels: Levels) -> dict[str, list[int]]:
    """Levels over time of each layer's busiest scope and of the bottleneck (for charts)."""
    keys: dict[str, None] = {}  # ordered, without repeats
    for layer in result.layers():
        if layer["busiest"] is not None:
            keys[f"{layer['layer']}:{layer['busiest']}"] = None
    neck = result.bottleneck
    if neck is not None:
        keys[f"{neck['layer']}:{neck['scope']}"] = None
    out = {}
    for key in keys:
        i = levels.index(key)
        if i is not None:
            out[key] = levels.series(i)
    return out


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 6)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def to_document(result: RunResult) -> dict[str, Any]:
    """The ``--json`` document (finite floats only; ``null`` for infinities).

    ``kind``, ``config``, ``seed``, ``traffic``, ``duration_s``, ``warmup_s``; ``counts``
    (every call once per row, warm-up included); ``waits_s`` (per kind ``inbound``,
    ``queued_inbound``, ``abandoned``, ``outbound``: ``n``, ``mean``, ``p50``, ``p90``,
    ``p99``, ``max``, warm-up included); ``estimates``: ``p_rejected``, ``p_queued``,
    ``p_abandoned`` (shares of arrivals) and ``wait_<kind>_s`` (mean waits), each ``null``
    (fewer than two batches with calls) or ``value`` (= ``numerator / denominator``:
    calls over arrivals, seconds over callers, after the warm-up), ``half_width`` (95%),
    ``batches``, ``numerator``, ``denominator``; ``bottleneck``, ``layers``, ``scopes``,
    ``refusals``, ``cooldowns``, ``perf``; a load test adds its findings.
    """
    doc: dict[str, Any] = {
        "kind": result.kind,
        "config": result.config,
        "seed": result.seed,
        "traffic": result.traffic,
        "duration_s": result.duration_s,
        "warmup_s": result.warmup_s,
        "counts": {**{k: v for k, v in asdict(result.counts).items()
                      if k != "rejected_by_reason"},
                   "rejected_by_reason": dict(sorted(result.counts.rejected_by_reason.items()))},
        "waits_s": {name: asdict(s) for name, s in result.waits.items()},
        "estimates": {name: None if e is None else asdict(e)
                      for name, e in result.estimates.items()},
        "bottleneck": result.bottleneck,
        "layers": result.layers(),
        "scopes": [{k: v for k, v in asdict(row).items() if k != "key"}
                   for row in result.scopes],
        "refusals": [{"layer": lay, "scope": sc, "reason": reason, "count": n}
                     for (lay, sc, reason), n in sorted(result.refusals.items())],
        "cooldowns": [{"scope": s, "from_s": a, "until_s": b} for s, a, b in result.cooldowns],
        "perf": result.perf,
    }
    found = result.findings
    if found is not None:
        doc = {
            "silent_failures": int(found.silent_failures),
            "cap_violations": int(found.cap_violations),
            **doc,
            "failures_by_kind": dict(found.failures_by_kind),
            "violations": [asdict(v) for v in found.violations],
            "latency_ms": {name: asdict(s) for name, s in found.latency_ms.items()},
            "dropped": found.dropped,
            "client_errors": found.client_errors,
            "released_at_end": found.released_at_end,
            "scopes_exact": found.scopes_exact,
            "speed": found.speed,
            "wall_s": found.wall_s,
        }
    cleaned: dict[str, Any] = _clean(doc)
    return cleaned
