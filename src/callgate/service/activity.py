"""What this gate process has answered lately: decisions per second and the layer refusing most.

The headroom page (``GET /``) shows, beside the store's occupancy, how the calls reaching
*this* process are being answered. Picture a tally sheet at a door: every answer gets a
stroke in the current column (who asked, what they were told, which layer said no), and once
a second the column is torn off and filed: the last few seconds one by one (for a rate),
older ones merged per minute for an hour (for "which layer refused most in the last 5 and 60
minutes"). Only answers given since this process started are on the sheet, and only this
process's: another gate on the same store keeps its own.

The strokes come from :meth:`callgate.service.metrics.Metrics.decided`, the one place every
edge's decisions are counted, so there is no second counting path; a repeated poll of a call
already on hold is not a new answer and is not counted. Counting takes no clock reading: the
time is read when a column is filed (:meth:`Activity.roll`, once a second from the app's
lifespan), so the hot path pays for one dict update and nothing else.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from callgate.model import Outcome

RATE_WINDOW_S = 10.0  # decisions per second are averaged over about this long
TOP_WINDOWS_S = (300.0, 3600.0)  # "refused most in the last 5 and 60 minutes"
MINUTE_S = 60.0
OUTCOMES = tuple(outcome.value for outcome in Outcome)
ADMITTED = Outcome.ADMITTED.value
NO_LAYER = "none"  # a decision that names no layer

# (account, outcome, layer): the account is "" when the call's number left the stack
Key = tuple[str, str, str]


@dataclass(frozen=True)
class _Column:
    start_s: float
    end_s: float
    counts: dict[Key, int]


class Activity:
    """Decisions answered by this process, filed per second and per minute (gate clock, s)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.started_s = clock()
        self._lock = threading.Lock()
        self._current: dict[Key, int] = {}
        self._current_since_s = self.started_s
        self._seconds: deque[_Column] = deque()
        self._minutes: dict[int, dict[Key, int]] = {}  # minute index (epoch s // 60) -> counts
        self._totals: dict[Key, int] = {}

    def count(self, account: str, outcome: str, layer: str) -> None:
        """One more answer (the hot path: no clock, one dict update under a lock)."""
        key = (account, outcome, layer)
        with self._lock:
            current = self._current
            current[key] = current.get(key, 0) + 1

    def roll(self) -> None:
        """File the current column at the clock's now (call about once a second)."""
        now = self._clock()
        with self._lock:
            since = self._current_since_s
            column = _Column(since, max(now, since), self._current)
            self._current, self._current_since_s = {}, column.end_s
            self._seconds.append(column)
            while self._seconds and self._seconds[0].end_s < now - RATE_WINDOW_S:
                self._seconds.popleft()
            _add(self._minutes.setdefault(int(column.end_s // MINUTE_S), {}), column.counts)
            _add(self._totals, column.counts)
            oldest = int((now - max(TOP_WINDOWS_S)) // MINUTE_S)
            for index in [m for m in self._minutes if m < oldest]:
                del self._minutes[index]

    def summary(self, account: str | None = None) -> dict[str, Any]:
        """The page's document: rates, totals and the top refusing layer per window.

        ``account`` None covers every account (an admin's view); else only that account's
        calls. Rates are per second of the gate clock, over the last ``RATE_WINDOW_S``.
        """
        now = self._clock()
        mine = _mine(account)
        with self._lock:
            current = self._current
            recent = [c for c in self._seconds if c.end_s >= now - RATE_WINDOW_S]
            span_s = max(0.0, now - (recent[0].start_s if recent else self._current_since_s))
            recent_counts = _sum([*(c.counts for c in recent), current], mine)
            totals = _sum([self._totals, current], mine)
            top = {str(int(w)): _top(self._window(now, w, current), mine) for w in TOP_WINDOWS_S}
        return {
            "started": self.started_s,
            "now": now,
            "rate_window_s": span_s,
            "rates": _rates(recent_counts, span_s),
            "totals": _breakdown(totals),
            "top_refusing": top,
        }

    def _window(self, now: float, window_s: float, current: dict[Key, int]
                ) -> list[dict[Key, int]]:
        first = int((now - window_s) // MINUTE_S)
        return [*(counts for m, counts in self._minutes.items() if m >= first), current]


def _add(into: dict[Key, int], counts: dict[Key, int]) -> dict[Key, int]:
    for key, n in counts.items():
        into[key] = into.get(key, 0) + n
    return into


def _mine(account: str | None) -> Callable[[Key], bool]:
    if account is None:
        return lambda key: True
    return lambda key: key[0] == account


def _sum(parts: Iterable[dict[Key, int]], keep: Callable[[Key], bool]) -> dict[Key, int]:
    total: dict[Key, int] = {}
    for part in parts:
        _add(total, {k: n for k, n in part.items() if keep(k)})
    return total


def _breakdown(counts: dict[Key, int]) -> dict[str, dict[str, int]]:
    """Counts by outcome (every outcome, zeros included) and refusals by layer."""
    by_outcome = dict.fromkeys(OUTCOMES, 0)
    refused_by: dict[str, int] = {}
    for (_, outcome, layer), n in counts.items():
        by_outcome[outcome] = by_outcome.get(outcome, 0) + n
        if outcome != ADMITTED:
            refused_by[layer] = refused_by.get(layer, 0) + n
    return {"by_outcome": by_outcome, "refused_by_layer": dict(sorted(refused_by.items()))}


def _rates(counts: dict[Key, int], span_s: float) -> dict[str, dict[str, float]]:
    breakdown = _breakdown(counts)
    per_s = 0.0 if span_s <= 0 else 1.0 / span_s
    return {part: {name: _round(n * per_s) for name, n in values.items()}
            for part, values in breakdown.items()}


def _round(value: float) -> float:
    return 0.0 if not math.isfinite(value) else round(value, 3)


def _top(parts: list[dict[Key, int]], keep: Callable[[Key], bool]) -> dict[str, Any] | None:
    """The layer with the most refusals in ``parts`` (ties: alphabetical), or None."""
    refused = _breakdown(_sum(parts, keep))["refused_by_layer"]
    if not refused:
        return None
    layer = min(refused, key=lambda name: (-refused[name], name))
    return {"layer": layer, "refusals": refused[layer]}
