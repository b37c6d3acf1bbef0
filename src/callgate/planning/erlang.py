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

Conventions: traffic in erlangs (fractional values are fine), times in seconds,
probabilities and targets as fractions in (0, 1). Bad inputs raise ``ValueError`` naming
the argument.

How the numbers stay exact
--------------------------
Erlang B is iterated on its reciprocal ``R(n) = 1/B(n) = 1 + (n/A) R(n-1)``. An error in
``R`` shrinks by the factor ``1 - B(n) <= n/A`` at every step, so the recursion may start
from ``R = 1`` a few ``sqrt(A)`` lines below ``min(N, A)`` (far enough that the start-up
error has shrunk below 1e-18) and stops as soon as ``R`` overflows (``B`` below ~1e-308).
That makes ``erlang_b(100_000, 10**6)`` a loop of about fifteen thousand steps.

Erlang A sums its birth-death chain in closed form: relative to the probability of "all
``N`` agents busy, nobody on hold", the states with a queue add up to an integral over the
*offered wait* ``v`` (how long a caller would wait if infinitely patient)::

    h(v) = N mu * exp(-N mu v + (lambda / theta) * (1 - exp(-theta v)))

and a caller who would wait ``v`` is answered with probability ``exp(-theta v)``. All the
Erlang A measures are moments of ``h``; the integrals are taken in log space around the
peak of ``h`` with adaptive Gauss-Kronrod quadrature, so large traffic cannot overflow.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "AbandonStats",
    "QueueStats",
    "agents_for_asa",
    "agents_for_service_level",
    "agents_for_service_level_abandon",
    "erlang_a",
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


@dataclass(frozen=True, slots=True)
class AbandonStats:
    """Erlang A (callers on hold hang up when their patience runs out) figures."""

    p_wait: float
    """Probability that an arriving caller has to wait (finds every agent busy)."""
    p_abandon: float
    """Fraction of arriving callers who hang up before being answered."""
    asa_answered_s: float
    """Mean wait in seconds of the callers who are answered (``math.inf`` if none are)."""
    mean_wait_all_s: float
    """Mean time in seconds spent on hold over all callers, abandoned ones included."""
    service_level_answered: float
    """Fraction of ALL arriving callers answered within the target answer time."""
    occupancy: float
    """Carried load per agent: traffic x (1 - p_abandon) / agents."""


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
    in seconds. ``p_wait`` is ``C = N B / (N - A (1 - B))`` with B from Erlang B; the
    service level is ``1 - C exp(-(N - A) T / aht)``. With ``agents <= traffic`` the hold
    queue grows forever: ``stable`` is False, waits and queue length are ``math.inf``.
    """
    a = _check_traffic(traffic)
    n = _check_count("agents", agents)
    aht = _check_seconds("aht_s", aht_s)
    answer = _check_seconds("target_answer_s", target_answer_s)
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

    Erlang C (nobody hangs up). ``aht_s`` is the mean handle time in seconds. With
    ``max_occupancy`` (a fraction in (0, 1]) the answer also keeps traffic / agents at or
    below it. The search starts at the first stable staffing ``floor(traffic) + 1``.
    Zero traffic needs zero agents.
    """
    a = _check_traffic(traffic)
    aht = _check_seconds("aht_s", aht_s)
    answer = _check_seconds("target_answer_s", target_answer_s)
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


# ------------------------------------------------------------------------------ Erlang A

# Gauss-Kronrod 7/15 nodes on [-1, 1] (QUADPACK qk15): Kronrod abscissae, their weights,
# and the 7-point Gauss weights for abscissae 1, 3, 5 and the centre.
_XGK = (
    0.991455371120812639206854697526329,
    0.949107912342758524526189684047851,
    0.864864423359769072789712788640926,
    0.741531185599394439863864773280788,
    0.586087235467691130294144845693013,
    0.405845151377397166906606412076961,
    0.207784955007898467600689403773245,
)
_WGK = (
    0.022935322010529224963732008058970,
    0.063092092629978553290700663189204,
    0.104790010322250183839876322541518,
    0.140653259715525918745189590510238,
    0.169004726639267902826583426598550,
    0.190350578064785409913256402421014,
    0.204432940075298892414161999234649,
)
_WGK_CENTRE = 0.209482141084727828012999174891714
_WG = (
    0.129484966168869693270611432679082,
    0.279705391489276667901467771423780,
    0.381830050505118944950369775488975,
)
_WG_CENTRE = 0.417959183673469387755102040816327

_Moments = tuple[float, float, float, float]
_TAIL = 80.0  # integrate where the log-integrand is within _TAIL of its peak
_LEVELS = (0.5, 2.0, 5.0, 10.0, 20.0, 35.0, 55.0, _TAIL)
_QUAD_TOL = 1e-12


def _psi(u: float) -> float:
    """``exp(-u) - 1 + u`` without cancellation (>= 0, about u**2 / 2 near 0)."""
    if abs(u) < 0.1:
        acc = 1.0  # Horner form of (u**2 / 2) * (1 - u/3 + u**2/12 - ...)
        for k in range(14, 2, -1):
            acc = 1.0 + acc * (-u) / k
        return 0.5 * u * u * acc
    return u + math.expm1(-u)


def _gk15(fn: Callable[[float], _Moments], lo: float, hi: float) -> tuple[_Moments, _Moments]:
    """Kronrod-15 estimates of the four moments on [lo, hi] and |Kronrod - Gauss-7|."""
    centre = 0.5 * (lo + hi)
    half = 0.5 * (hi - lo)
    fc = fn(centre)
    k = [_WGK_CENTRE * v for v in fc]
    g = [_WG_CENTRE * v for v in fc]
    for j in range(7):
        dx = half * _XGK[j]
        f1 = fn(centre - dx)
        f2 = fn(centre + dx)
        for i in range(4):
            pair = f1[i] + f2[i]
            k[i] += _WGK[j] * pair
            if j % 2 == 1:
                g[i] += _WG[j // 2] * pair
    est = (half * k[0], half * k[1], half * k[2], half * k[3])
    err = tuple(abs(half * (k[i] - g[i])) for i in range(4))
    return est, (err[0], err[1], err[2], err[3])


def _level_point(
    f: Callable[[float], float], level: float, direction: float, limit: float
) -> float:
    """Point on one side of the peak of concave ``f`` (max 0 at 0) where ``f = -level``.

    ``direction`` is +1 or -1; the search stops at ``limit`` (|limit| may be inf).
    """
    inner = 0.0
    outer = direction * min(1.0, abs(limit))
    while f(outer) > -level:
        if abs(outer) >= abs(limit):
            return limit
        inner = outer
        outer = direction * min(abs(outer) * 2.0, abs(limit))
    for _ in range(200):
        mid = 0.5 * (inner + outer)
        if f(mid) > -level:
            inner = mid
        else:
            outer = mid
        if abs(outer - inner) <= 1e-9 * abs(outer):
            break
    return outer


def _log(x: float) -> float:
    return math.log(x) if x > 0.0 else -_INF


def erlang_a(
    traffic: float, agents: int, aht_s: float, patience_s: float, target_answer_s: float
) -> AbandonStats:
    """Erlang A (M/M/N+M) figures: callers on hold hang up after a mean ``patience_s``.

    ``traffic`` in erlangs, ``aht_s`` mean handle time, ``patience_s`` mean patience and
    ``target_answer_s`` answer-time target, all in seconds. Stable for every number of
    agents, including fewer than the traffic and zero (then every caller waits and hangs
    up, and ``asa_answered_s`` is ``math.inf``). Zero traffic gives an idle centre.
    """
    a = _check_traffic(traffic)
    n = _check_count("agents", agents)
    aht = _check_seconds("aht_s", aht_s)
    patience = _check_seconds("patience_s", patience_s)
    answer = _check_seconds("target_answer_s", target_answer_s)
    if a == 0.0:
        return AbandonStats(
            p_wait=0.0,
            p_abandon=0.0,
            asa_answered_s=0.0,
            mean_wait_all_s=0.0,
            service_level_answered=1.0,
            occupancy=0.0,
        )
    if n == 0:
        return AbandonStats(
            p_wait=1.0,
            p_abandon=1.0,
            asa_answered_s=_INF,
            mean_wait_all_s=patience,
            service_level_answered=0.0,
            occupancy=0.0,
        )
    recip = _recip_b(a, n)
    if recip == _INF:  # all-busy is below 1e-308: nobody waits
        return AbandonStats(
            p_wait=0.0,
            p_abandon=0.0,
            asa_answered_s=0.0,
            mean_wait_all_s=0.0,
            service_level_answered=1.0,
            occupancy=a / n,
        )
    # Units: time in 1/(N mu) = aht/N, so the offered wait s has density exp(f(s)) with
    # f(s) = -s + (rho/eps)(1 - exp(-eps s)), rho = A/N, eps = theta/(N mu).
    rho = a / n
    # Clamped to where psi(eps t)/eps neither underflows nor overflows; patience beyond
    # 1e100 x aht/N is infinite for every practical purpose.
    eps = min(max(aht / (n * patience), 1e-100), 1e250)
    if rho > 1.0:
        # Peak of f at s* = log(rho)/eps, height f* = (rho - 1 - log rho)/eps.
        s_peak = math.log(rho) / eps
        f_peak = _psi(-math.log(rho)) / eps
        c = 1.0
        one_minus_c = 0.0
    else:
        s_peak = 0.0
        f_peak = 0.0
        c = rho
        one_minus_c = (n - a) / n
    # With t = s - s*: f(s) - f* = -(1 - c) t - c psi(eps t)/eps, c = min(rho, 1).

    def shape(t: float) -> float:
        return -one_minus_c * t - c * _psi(eps * t) / eps

    def moments(t: float) -> _Moments:
        s = max(0.0, s_peak + t)
        weight = math.exp(shape(t))
        answered = math.exp(-eps * s)  # P(answered | offered wait s)
        return (weight, -math.expm1(-eps * s) * weight, answered * weight, s * answered * weight)

    t_answer = n * answer / aht - s_peak  # target answer time on the t axis
    right = [_level_point(shape, level, 1.0, _INF) for level in _LEVELS]
    left = [_level_point(shape, level, -1.0, -s_peak) for level in _LEVELS] if s_peak else []
    points = sorted({0.0, *left, *right})
    lo_end, hi_end = points[0], points[-1]
    if lo_end < t_answer < hi_end:
        points = sorted({*points, t_answer})

    panels: list[tuple[float, float, _Moments, _Moments]] = []
    for lo, hi in itertools.pairwise(points):
        if hi > lo:
            panels.append((lo, hi, *_gk15(moments, lo, hi)))
    for _ in range(3000):
        totals = [sum(p[2][i] for p in panels) for i in range(4)]
        errors = [sum(p[3][i] for p in panels) for i in range(4)]
        if all(errors[i] <= _QUAD_TOL * totals[i] + 1e-300 for i in range(4)):
            break
        scales = [_QUAD_TOL * totals[i] + 1e-300 for i in range(4)]
        worst = max(
            range(len(panels)),
            key=lambda j: max(panels[j][3][i] / scales[i] for i in range(4)),
        )
        lo, hi, _, _ = panels.pop(worst)
        mid = 0.5 * (lo + hi)
        if not (lo < mid < hi):
            break
        panels.append((lo, mid, *_gk15(moments, lo, mid)))
        panels.append((mid, hi, *_gk15(moments, mid, hi)))
    wait_mass, abandon_mass, answered_mass, answered_wait = (
        sum(p[2][i] for p in panels) for i in range(4)
    )
    answered_in_time = sum(p[2][2] for p in panels if p[1] <= t_answer)

    # Relative to P(N busy, nobody holding): states 0..N-1 weigh R - 1 = 1/B - 1, the
    # waiting states weigh exp(f*) * wait_mass. f* can be huge (1e9 and more for patient
    # callers on an overloaded trunk), so only the free/waiting split goes through logs;
    # everything else is a ratio of integrals.
    log_odds = _log(recip - 1.0) - (f_peak + math.log(wait_mass))  # log(free / waiting)
    if log_odds > 0.0:
        odds = math.exp(-log_odds) if log_odds < 745.0 else 0.0
        p_wait = odds / (1.0 + odds)
        free = 1.0 / (1.0 + odds)
    else:
        odds = math.exp(log_odds)  # 0.0 when there is no free state at all
        p_wait = 1.0 / (1.0 + odds)
        free = odds / (1.0 + odds)
    p_abandon = min(1.0, p_wait * (abandon_mass / wait_mass))
    service_level = min(1.0, free + p_wait * (answered_in_time / wait_mass))
    answered = free + p_wait * (answered_mass / wait_mass)
    wait_answered = (aht / n) * p_wait * (answered_wait / wait_mass)
    asa = wait_answered / answered if answered > 0.0 else _INF
    return AbandonStats(
        p_wait=p_wait,
        p_abandon=p_abandon,
        asa_answered_s=asa,
        mean_wait_all_s=p_abandon * (aht / (n * eps)),  # = p_abandon * patience (Little)
        service_level_answered=service_level,
        occupancy=min(1.0, a * (1.0 - p_abandon) / n),
    )


def agents_for_service_level_abandon(
    traffic: float,
    aht_s: float,
    patience_s: float,
    target_answer_s: float,
    service_level: float,
) -> int:
    """Fewest agents (from 1) answering ``service_level`` of ALL callers within target.

    Erlang A: callers hang up after a mean ``patience_s``; ``aht_s`` is the mean handle
    time and ``target_answer_s`` the answer-time target, all in seconds. The answered
    service level rises with the number of agents, so the search gallops upward from one
    agent and then bisects. Zero traffic needs zero agents.
    """
    a = _check_traffic(traffic)
    aht = _check_seconds("aht_s", aht_s)
    patience = _check_seconds("patience_s", patience_s)
    answer = _check_seconds("target_answer_s", target_answer_s)
    goal = _check_fraction("service_level", service_level)
    if a == 0.0:
        return 0

    def meets(n: int) -> bool:
        return erlang_a(a, n, aht, patience, answer).service_level_answered >= goal

    failing, passing = 0, 1
    while not meets(passing):
        failing, passing = passing, passing * 2
    while passing - failing > 1:
        mid = (failing + passing) // 2
        if meets(mid):
            passing = mid
        else:
            failing = mid
    return passing
