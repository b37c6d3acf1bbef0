"""Exact, numerically stable queueing math for capacity planning.

Picture a trunk of ``N`` phone lines (or ``N`` agents) and a stream of callers. Traffic
is measured in *erlangs*: arrival rate x mean handle time, i.e. how many lines would be
busy on average if nobody were ever turned away. Ten calls a minute that last three
minutes each are 30 erlangs.

Three classic models answer "how many lines or agents do I need?":

* **Erlang B** (M/M/N/N): a caller who finds every line busy hears a busy tone and is
  lost. ``erlang_b`` is the fraction of callers blocked. It is computed with the stable
  recursion ``B(0) = 1, B(n) = A B(n-1) / (n + A B(n-1))``, never with ``A**N / N!``
  (which overflows long before realistic trunk sizes).
* **Erlang C** (M/M/N): a caller who finds every agent busy waits on hold, forever if
  need be. Only ``N > A`` agents keep the hold queue from growing without bound.
* **Erlang A** (M/M/N+M, Palm): callers on hold hang up after an exponentially
  distributed patience. The queue is stable for any ``N`` because impatience drains it.
  It lives in :mod:`callgate.planning.erlang_a`.

Conventions: traffic in erlangs (fractional values are fine), times in seconds,
probabilities and targets as fractions in (0, 1). An answer-time target of 0 s is legal:
the service level is then the share of callers who do not wait at all. Bad inputs raise
``ValueError`` naming the argument.

How the numbers stay exact
--------------------------
Erlang B is iterated on its reciprocal ``R(n) = 1/B(n) = 1 + (n/A) R(n-1)``. An error in
``R`` shrinks by the factor ``1 - B(n) <= n/A`` at every step, so the recursion may start
from ``R = 1`` a few ``sqrt(A)`` lines below ``min(N, A)`` (far enough that the start-up
error has shrunk below 1e-18) and stops as soon as ``R`` overflows (``B`` below ~1e-308).
That makes ``erlang_b(100_000, 10**6)`` a loop of about fifteen thousand steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "QueueStats",
    "agents_for_asa",
    "agents_for_service_level",
    "erlang_b",
    "erlang_c",
    "lines_for_blocking",
    "traffic_for_blocking",
]

_INF = math.inf

# Start-up error of the Erlang B recursion is damped by at least exp(-_DAMPING).
_DAMPING = 42.0


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Erlang C (callers wait on hold forever) figures for one staffing level."""

    p_wait: float
    """Probability that a caller has to wait (finds every agent busy)."""
    asa_s: float
    """Average speed of answer over all callers, in seconds (``math.inf`` if unstable)."""
    service_level: float
    """Fraction of callers answered within the target answer time."""
    occupancy: float
    """Fraction of agent time spent on calls (traffic / agents, at most 1)."""
    mean_queue_length: float
    """Mean number of callers on hold (``math.inf`` if unstable)."""
    stable: bool
    """False when agents <= traffic: the hold queue grows without bound."""


# --------------------------------------------------------------------------- validation


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    result = float(value)
    if math.isnan(result):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return result


def _check_traffic(traffic: object) -> float:
    value = _number("traffic", traffic)
    if not (0.0 <= value < _INF):
        raise ValueError(f"traffic must be >= 0 erlangs, got {traffic}")
    return value


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value}")
    return value


def _check_seconds(name: str, value: object) -> float:
    seconds = _number(name, value)
    if not (0.0 < seconds < _INF):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value}")
    return seconds


def _check_target_seconds(name: str, value: object) -> float:
    """An answer-time target: 0 (answered at once) or any finite number of seconds."""
    seconds = _number(name, value)
    if not (0.0 <= seconds < _INF):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value}")
    return seconds


def _check_fraction(name: str, value: object) -> float:
    fraction = _number(name, value)
    if not (0.0 < fraction < 1.0):
        raise ValueError(f"{name} must be a fraction strictly between 0 and 1, got {value}")
    return fraction


# ------------------------------------------------------------------------------ Erlang B


def _start_index(traffic: float, top: int) -> int:
    """Where the reciprocal recursion may start from ``R = 1`` to reach line ``top``.

    Steps ``n = s+1 .. min(top, A)`` damp the start-up error by ``prod(n / A)``, and
    ``log(n / A) <= -(A - n) / A``; we take the fewest steps ``m`` whose bound reaches
    ``exp(-_DAMPING)``: ``m**2 + 2 d m >= 2 K A`` with ``d = A - top - 1/2``.
    """
    top = min(top, math.floor(traffic))
    if top <= 0:
        return 0
    d = traffic - top - 0.5
    two_ka = 2.0 * _DAMPING * traffic
    steps = math.ceil(two_ka / (d + math.hypot(d, math.sqrt(two_ka)))) + 1
    return max(0, top - steps)


def _recip_b(traffic: float, lines: int) -> float:
    """``1 / B(traffic, lines)``; ``math.inf`` once B drops below the float range."""
    if lines == 0:
        return 1.0
    if traffic == 0.0:
        return _INF
    r = 1.0
    for n in range(_start_index(traffic, lines) + 1, lines + 1):
        r = 1.0 + r * (n / traffic)
        if r == _INF:
            break
    return r


def erlang_b(traffic: float, lines: int) -> float:
    """Blocking probability of ``traffic`` erlangs offered to ``lines`` lines (Erlang B).

    The fraction of callers who find every line busy and are lost. ``lines == 0`` blocks
    everybody (1.0); zero traffic on one or more lines blocks nobody (0.0). Relative error
    is below 1e-9 wherever the result is at least 1e-300; smaller values may be 0.0.
    """
    a = _check_traffic(traffic)
    n = _check_count("lines", lines)
    return 1.0 / _recip_b(a, n)


def lines_for_blocking(traffic: float, target: float) -> int:
    """Fewest lines that block at most ``target`` (a fraction) of ``traffic`` erlangs.

    Zero traffic needs zero lines.
    """
    a = _check_traffic(traffic)
    t = _check_fraction("target", target)
    if a == 0.0:
        return 0
    # Lines can carry at most one erlang each, so B(n) >= 1 - n/A: no n below A(1 - t)
    # can meet the target. Start the recursion just below that point.
    first = max(0, math.floor(a * (1.0 - t)) - 1)
    n = _start_index(a, first)
    r = 1.0
    while n < first:
        n += 1
        r = 1.0 + r * (n / a)
    while 1.0 / r > t:
        n += 1
        r = 1.0 + r * (n / a)
    # The pass above may start at a different point than erlang_b(a, n) does; settle the
    # last bit so that the answer agrees exactly with erlang_b.
    while erlang_b(a, n) > t:
        n += 1
    while n > 0 and erlang_b(a, n - 1) <= t:
        n -= 1
    return n


def traffic_for_blocking(lines: int, target: float) -> float:
    """Most traffic in erlangs that ``lines`` lines carry while blocking at most ``target``.

    Blocking rises with traffic, so this is the root of ``B(A, lines) = target``, found by
    safeguarded Newton steps on ``log B`` to about 1e-13 relative; the result always
    satisfies ``erlang_b(result, lines) <= target``. Zero lines carry 0.0 erlangs.
    """
    n = _check_count("lines", lines)
    t = _check_fraction("target", target)
    if n == 0:
        return 0.0
    log_t = math.log(t)
    lo = 0.0  # erlang_b(lo, n) <= t
    hi = n / (1.0 - t)  # B >= 1 - n/A = t here: at or above the root
    x = min(float(n), 0.5 * (lo + hi))
    for iteration in range(300):
        b = erlang_b(x, n)
        if b <= t:
            lo = x
        else:
            hi = x
        width = hi - lo
        if width <= 1e-13 * hi:
            break
        proposal = _INF
        if b > 0.0 and iteration < 100:
            slope = n / x - 1.0 + b  # d log B / dA
            if slope > 0.0:
                proposal = x - (math.log(b) - log_t) / slope
        if not (lo < proposal < hi):
            proposal = 0.5 * (lo + hi)
        # Step at least a little into the bracket so that it closes from both sides.
        nudge = min(0.25e-13 * hi, 0.25 * width)
        x = min(max(proposal, lo + nudge), hi - nudge)
    return lo


# ------------------------------------------------------------------------------ Erlang C


def _stable_stats(traffic: float, agents: int, aht: float, answer: float, b: float) -> QueueStats:
    """Erlang C figures for agents > traffic, from the Erlang B value ``b``."""
    gap = agents - traffic
    p_wait = min(1.0, agents * b / (agents - traffic * (1.0 - b)))
    service_level = min(1.0, max(0.0, 1.0 - p_wait * math.exp(-gap * answer / aht)))
    return QueueStats(
        p_wait=p_wait,
        asa_s=p_wait * aht / gap,
        service_level=service_level,
        occupancy=traffic / agents,
        mean_queue_length=p_wait * traffic / gap,
        stable=True,
    )


_UNSTABLE = QueueStats(
    p_wait=1.0,
    asa_s=_INF,
    service_level=0.0,
    occupancy=1.0,
    mean_queue_length=_INF,
    stable=False,
)

_IDLE = QueueStats(
    p_wait=0.0, asa_s=0.0, service_level=1.0, occupancy=0.0, mean_queue_length=0.0, stable=True
)


def erlang_c(traffic: float, agents: int, aht_s: float, target_answer_s: float) -> QueueStats:
    """Erlang C figures for ``traffic`` erlangs on ``agents`` agents who never lose a caller.

    ``aht_s`` is the mean handle time and ``target_answer_s`` the answer-time target, both
    in seconds (0 s: the service level is ``1 - p_wait``). ``p_wait`` is
    ``C = N B / (N - A (1 - B))`` with B from Erlang B; the service level is
    ``1 - C exp(-(N - A) T / aht)``. With ``agents <= traffic`` the hold
    queue grows forever: ``stable`` is False, waits and queue length are ``math.inf``.
    """
    a = _check_traffic(traffic)
    n = _check_count("agents", agents)
    aht = _check_seconds("aht_s", aht_s)
    answer = _check_target_seconds("target_answer_s", target_answer_s)
    if a == 0.0:
        return _IDLE
    if n <= a:
        return _UNSTABLE
    return _stable_stats(a, n, aht, answer, 1.0 / _recip_b(a, n))


def _search_agents(traffic: float, first: int, good_enough: Callable[[int, float], bool]) -> int:
    """Smallest ``n >= first`` (with ``first > traffic``) that ``good_enough(n, B(n))``.

    Steps the Erlang B recursion one agent at a time (O(N) in all); for ``n > A`` the
    chain is exactly the one ``erlang_b`` runs, so answers agree with ``erlang_c``.
    """
    n = first
    r = _recip_b(traffic, n)
    while not good_enough(n, 1.0 / r):
        n += 1
        r = 1.0 + r * (n / traffic)
    return n


def agents_for_service_level(
    traffic: float,
    aht_s: float,
    target_answer_s: float,
    service_level: float,
    max_occupancy: float | None = None,
) -> int:
    """Fewest agents answering ``service_level`` of callers within ``target_answer_s``.

    Erlang C (nobody hangs up). ``aht_s`` is the mean handle time in seconds;
    ``target_answer_s`` may be 0 (then the goal is on the share not waiting at all). With
    ``max_occupancy`` (a fraction in (0, 1]) the answer also keeps traffic / agents at or
    below it. The search starts at the first stable staffing ``floor(traffic) + 1``.
    Zero traffic needs zero agents.
    """
    a = _check_traffic(traffic)
    aht = _check_seconds("aht_s", aht_s)
    answer = _check_target_seconds("target_answer_s", target_answer_s)
    goal = _check_fraction("service_level", service_level)
    cap: float | None = None
    if max_occupancy is not None:
        cap = _number("max_occupancy", max_occupancy)
        if not (0.0 < cap <= 1.0):
            raise ValueError(f"max_occupancy must be a fraction in (0, 1], got {max_occupancy}")
    if a == 0.0:
        return 0
    first = math.floor(a) + 1
    if cap is not None:
        # No n below A / cap can meet the cap; start two below to stay clear of rounding.
        first = max(first, math.floor(a / cap) - 2)

    def good_enough(n: int, b: float) -> bool:
        stats = _stable_stats(a, n, aht, answer, b)
        return stats.service_level >= goal and (cap is None or stats.occupancy <= cap)

    return _search_agents(a, first, good_enough)


def agents_for_asa(traffic: float, aht_s: float, asa_s: float) -> int:
    """Fewest agents whose average speed of answer (Erlang C) is at most ``asa_s`` seconds.

    ``aht_s`` is the mean handle time in seconds. Zero traffic needs zero agents.
    """
    a = _check_traffic(traffic)
    aht = _check_seconds("aht_s", aht_s)
    goal = _check_seconds("asa_s", asa_s)
    if a == 0.0:
        return 0

    def good_enough(n: int, b: float) -> bool:
        return _stable_stats(a, n, aht, 1.0, b).asa_s <= goal

    return _search_agents(a, math.floor(a) + 1, good_enough)
