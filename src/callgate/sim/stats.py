"""The statistics both testers keep: levels over time, percentiles, ratio-of-sums intervals.

:class:`Levels` follows how many slots each scope holds as leases start and end and
integrates over time: the peak, the time-weighted mean, the time spent at the cap, and a
coarse series (the highest level in each of a few hundred buckets) for the chart. Changes
may arrive a little late (a queued caller learns of its promotion at its next poll, a dead
worker's lease ends in the future): they wait in a heap until ``lag_s`` has passed, so
they are always applied in time order.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# Two-sided 95% quantiles of Student's t by degrees of freedom (1..30, then 40, 60, 120).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_T975_TAIL = ((40, 2.021), (60, 2.000), (120, 1.980))


def t975(df: int) -> float:
    """Student's t quantile for a two-sided 95% interval with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    for limit, value in _T975_TAIL:
        if df <= limit:
            return value
    return 1.960


@dataclass(frozen=True)
class Estimate:
    """A ratio of sums over batches: ``value`` +- ``half_width`` is a 95% confidence interval.

    ``value`` is ``numerator / denominator`` over the whole run after the warm-up (calls
    over arrivals, or seconds waited over callers), so it is exactly the count divided by
    the arrivals, whatever the batches hold: a quiet night hour weighs what its few
    arrivals weigh, not as much as the busy hour. The half-width is the delta-method
    (ratio estimator) interval over the batches: with ``e_i = y_i - R x_i``,
    ``Var(R) ~ n s_e^2 / X^2``, and Student's t with ``n_eff - 1`` degrees of freedom,
    ``n_eff = X^2 / sum(x_i^2)`` the batches' effective number (a profiled day's night
    batches hold few calls and tell little). Batches differing systematically (a profiled
    day) make ``s_e`` larger, never smaller, so the interval errs wide, not narrow.
    """

    value: float
    half_width: float
    batches: int
    numerator: float = 0.0
    """Calls (or seconds) counted after the warm-up."""
    denominator: float = 0.0
    """Arrivals (or callers) counted after the warm-up."""

    @classmethod
    def of(cls, counts: Sequence[tuple[float, float]],
           total: tuple[float, float] | None = None) -> Estimate | None:
        """From (numerator, denominator) per batch; batches with no denominator are skipped.

        ``total``, when given, is the exact (numerator, denominator) of the whole run
        (e.g. ``math.fsum`` over every wait rather than over batch sums), used for the
        point estimate; it must equal the batches' sums up to rounding.
        """
        used = [(y, x) for y, x in counts if x > 0]
        n = len(used)
        if n < 2:
            return None
        top, bottom = total if total is not None else (
            math.fsum(y for y, _ in used), math.fsum(x for _, x in used))
        ratio = top / bottom
        spread = math.fsum((y - ratio * x) ** 2 for y, x in used) / (n - 1)
        weight = math.fsum(x for _, x in used)
        effective = weight * weight / math.fsum(x * x for _, x in used)
        df = max(1, math.floor(effective + 1e-9) - 1)
        half = t975(df) * math.sqrt(n * spread) / bottom
        return cls(ratio, half, n, top, bottom)

    def covers(self, truth: float) -> bool:
        return abs(self.value - truth) <= self.half_width


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) of sorted values, linear between order statistics."""
    if not ordered:
        return math.nan
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Summary:
    """Count, mean and percentiles of a sample (seconds or milliseconds, as given)."""

    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        ordered = sorted(values)
        if not ordered:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return cls(len(ordered), math.fsum(ordered) / len(ordered), percentile(ordered, 0.5),
                   percentile(ordered, 0.9), percentile(ordered, 0.99), ordered[-1])


Scopes = tuple[tuple[int, int], ...]
"""(scope index, units) pairs: what one lease holds."""


class Levels:
    """Slots held per scope over ``[start_s, end_s]``, changes applied in time order.

    ``index(key)`` gives a scope's slot in the arrays; :meth:`change` records that a
    lease holding ``scopes`` started (+1) or ended (-1) at ``t``; :meth:`advance` applies
    every change older than ``now - lag_s``; :meth:`finish` applies the rest.
    """

    def __init__(self, caps: Mapping[str, int], start_s: float, end_s: float,
                 lag_s: float = 0.0, buckets: int = 300) -> None:
        self.keys = list(caps)
        self.caps = [caps[k] for k in self.keys]
        self._index = {k: i for i, k in enumerate(self.keys)}
        n = len(self.keys)
        self.level = [0] * n
        self.peak = [0] * n
        self.area = [0.0] * n
        self.at_cap_s = [0.0] * n
        self._last = [start_s] * n
        self.start_s, self.end_s, self.lag_s = start_s, end_s, lag_s
        self.buckets = max(1, buckets)
        self._bucket_s = max(end_s - start_s, 1e-9) / self.buckets
        self._bucket_peak: dict[int, list[int]] = {}
        self._bucket_last: dict[int, list[int]] = {}
        # (time, sign, seq, scopes): at one instant ends (-1) come before starts (+1).
        self._pending: list[tuple[float, int, int, Scopes]] = []
        self._seq = 0
        self.finished = False

    def index(self, key: str) -> int | None:
        return self._index.get(key)

    def change(self, t_s: float, scopes: Scopes, sign: int) -> None:
        self._seq += 1
        heapq.heappush(self._pending, (t_s, sign, self._seq, scopes))

    def advance(self, now_s: float) -> None:
        horizon = now_s - self.lag_s
        pending = self._pending
        while pending and pending[0][0] <= horizon:
            t_s, sign, _, scopes = heapq.heappop(pending)
            self._apply(t_s, scopes, sign)

    def finish(self) -> None:
        """Apply every change up to ``end_s`` and close the integrals there."""
        if self.finished:
            return
        pending = self._pending
        while pending and pending[0][0] <= self.end_s:
            t_s, sign, _, scopes = heapq.heappop(pending)
            self._apply(t_s, scopes, sign)
        self._pending = []
        for i in range(len(self.keys)):
            self._close(i, self.end_s)
        self.finished = True

    def _close(self, i: int, t_s: float) -> None:
        dt = t_s - self._last[i]
        if dt > 0:
            self.area[i] += self.level[i] * dt
            if self.level[i] >= self.caps[i]:
                self.at_cap_s[i] += dt
            self._last[i] = t_s

    def _apply(self, t_s: float, scopes: Scopes, sign: int) -> None:
        if t_s > self.end_s or self.finished:
            return
        t_s = max(t_s, self.start_s)
        bucket = min(int((t_s - self.start_s) / self._bucket_s), self.buckets - 1)
        for i, units in scopes:
            self._close(i, t_s)
            level = self.level[i] + sign * units
            self.level[i] = level
            if level > self.peak[i]:
                self.peak[i] = level
            peaks = self._bucket_peak.get(i)
            if peaks is None:
                peaks = self._bucket_peak[i] = [-1] * self.buckets
                self._bucket_last[i] = [-1] * self.buckets
            if level > peaks[bucket]:
                peaks[bucket] = level
            self._bucket_last[i][bucket] = level

    def mean(self, i: int) -> float:
        span = self.end_s - self.start_s
        return self.area[i] / span if span > 0 else float(self.level[i])

    def series(self, i: int) -> list[int]:
        """The highest level of scope ``i`` in each bucket (for charts)."""
        peaks = self._bucket_peak.get(i)
        if peaks is None:
            return [0] * self.buckets
        last = self._bucket_last[i]
        out, carry = [], 0
        for b in range(self.buckets):
            out.append(max(carry, peaks[b]))
            if last[b] >= 0:
                carry = last[b]
        return out

    def bucket_times(self) -> list[float]:
        """The start of every bucket (seconds from the start of the run)."""
        return [b * self._bucket_s for b in range(self.buckets)]


def max_overlap(intervals: Iterable[tuple[float, float, int]], cap: int
                ) -> tuple[int, int]:
    """Sweep ``(start, end, units)`` intervals: the highest total, and how many starts
    lifted the total above ``cap`` (ends sort before starts at the same instant)."""
    events: list[tuple[float, int, int]] = []
    for start, end, units in intervals:
        events.append((start, 1, units))
        events.append((end, 0, -units))
    events.sort()
    level = peak = over = 0
    for _, kind, delta in events:
        level += delta
        peak = max(peak, level)
        if kind == 1 and level > cap:
            over += 1
    return peak, over
