"""Erlang A (M/M/N+M, Palm): callers on hold hang up when their patience runs out.

Picture the hold queue of a clinic's phone line: ``N`` agents, callers arriving at random,
and every caller who is put on hold willing to wait only so long (an exponentially
distributed patience with mean ``patience_s``) before hanging up. Unlike Erlang C, the
queue is stable for any ``N``, even fewer agents than the traffic, because impatience
drains it; the price is the callers who abandon.

Conventions are those of :mod:`callgate.planning.erlang`: traffic in erlangs, times in
seconds, probabilities and targets as fractions in (0, 1); bad inputs raise
``ValueError`` naming the argument. Both ends of patience are legal and take the limits'
values: ``patience_s = 0`` (nobody holds: Erlang B's lost calls) and ``patience_s =
math.inf`` (nobody hangs up: Erlang C while ``N > A``; beyond that, the excess traffic
``1 - N/A`` is the limit of those hanging up, and waits are unbounded).

How the numbers stay exact
--------------------------
The birth-death chain is summed in closed form: relative to the probability of "all
``N`` agents busy, nobody on hold", the states with a queue add up to an integral over the
*offered wait* ``v`` (how long a caller would wait if infinitely patient)::

    h(v) = N mu * exp(-N mu v + (lambda / theta) * (1 - exp(-theta v)))

and a caller who would wait ``v`` is answered with probability ``exp(-theta v)``. All the
Erlang A measures are moments of ``h``; the integrals are taken in log space around the
peak of ``h`` with adaptive Gauss-Kronrod quadrature, so large traffic cannot overflow.
The states with a free agent weigh ``1/B - 1`` with ``B`` from the Erlang B recursion of
:mod:`callgate.planning.erlang`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

# The shared argument checks and the Erlang B reciprocal recursion live with Erlang B;
# they are private to the planning package, not to one module.
from callgate.planning.erlang import (
    _check_count,
    _check_fraction,
    _check_seconds,
    _check_target_seconds,
    _check_traffic,
    _number,
    _recip_b,
    erlang_c,
)

__all__ = [
    "AbandonStats",
    "agents_for_abandon",
    "agents_for_service_level_abandon",
    "erlang_a",
]

_INF = math.inf


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


def _check_patience(value: object) -> float:
    """Mean patience: 0 (hangs up at once), any finite number of seconds, or ``math.inf``."""
    patience = _number("patience_s", value)
    if not patience >= 0.0:
        raise ValueError(f"patience_s must be a number of seconds >= 0 (math.inf: never "
                         f"hangs up), got {value}")
    return patience


def _no_patience(traffic: float, agents: int) -> AbandonStats:
    """Callers who find every agent busy hang up at once: Erlang B's lost calls."""
    b = 1.0 / _recip_b(traffic, agents)
    return AbandonStats(
        p_wait=b,
        p_abandon=b,
        asa_answered_s=0.0 if b < 1.0 else _INF,
        mean_wait_all_s=0.0,
        service_level_answered=1.0 - b,
        occupancy=min(1.0, traffic * (1.0 - b) / agents),
    )


def _endless_patience(traffic: float, agents: int, aht: float, answer: float) -> AbandonStats:
    """Nobody hangs up: Erlang C while stable; past it, the limit of very patient callers."""
    c = erlang_c(traffic, agents, aht, answer)
    if c.stable:
        return AbandonStats(
            p_wait=c.p_wait,
            p_abandon=0.0,
            asa_answered_s=c.asa_s,
            mean_wait_all_s=c.asa_s,
            service_level_answered=c.service_level,
            occupancy=c.occupancy,
        )
    # As patience grows without bound on agents <= traffic, everybody waits, waits grow
    # without bound, and exactly the traffic the agents cannot carry hangs up.
    return AbandonStats(
        p_wait=1.0,
        p_abandon=max(0.0, 1.0 - agents / traffic),
        asa_answered_s=_INF,
        mean_wait_all_s=_INF,
        service_level_answered=0.0,
        occupancy=1.0,
    )


def erlang_a(
    traffic: float, agents: int, aht_s: float, patience_s: float, target_answer_s: float
) -> AbandonStats:
    """Erlang A (M/M/N+M) figures: callers on hold hang up after a mean ``patience_s``.

    ``traffic`` in erlangs, ``aht_s`` mean handle time, ``patience_s`` mean patience and
    ``target_answer_s`` answer-time target, all in seconds. Stable for every number of
    agents, including fewer than the traffic and zero (then every caller waits and hangs
    up, and ``asa_answered_s`` is ``math.inf``). Zero traffic gives an idle centre.
    ``patience_s = 0`` is Erlang B (``p_abandon`` is the blocking), ``patience_s =
    math.inf`` Erlang C (see the module docstring for agents <= traffic), and
    ``target_answer_s = 0`` counts only callers answered without waiting.
    """
    a = _check_traffic(traffic)
    n = _check_count("agents", agents)
    aht = _check_seconds("aht_s", aht_s)
    patience = _check_patience(patience_s)
    answer = _check_target_seconds("target_answer_s", target_answer_s)
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
    if patience == 0.0:
        return _no_patience(a, n)
    if patience == _INF:
        return _endless_patience(a, n, aht, answer)
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
    patience = _check_patience(patience_s)
    answer = _check_target_seconds("target_answer_s", target_answer_s)
    goal = _check_fraction("service_level", service_level)
    if a == 0.0:
        return 0

    def meets(n: int) -> bool:
        return erlang_a(a, n, aht, patience, answer).service_level_answered >= goal

    return _fewest_agents(meets)


def agents_for_abandon(traffic: float, aht_s: float, patience_s: float, max_abandon: float) -> int:
    """Fewest agents (from 1) whose callers abandon at most ``max_abandon`` of the time.

    Erlang A: ``aht_s`` is the mean handle time and ``patience_s`` the callers' mean
    patience, in seconds; ``max_abandon`` is a fraction in (0, 1). Abandonment falls as
    agents are added, so the search gallops and bisects as
    :func:`agents_for_service_level_abandon` does. Zero traffic needs zero agents.
    """
    a = _check_traffic(traffic)
    aht = _check_seconds("aht_s", aht_s)
    patience = _check_patience(patience_s)
    goal = _check_fraction("max_abandon", max_abandon)
    if a == 0.0:
        return 0

    def meets(n: int) -> bool:
        # The answer-time target does not enter p_abandon; any positive value will do.
        return erlang_a(a, n, aht, patience, 1.0).p_abandon <= goal

    return _fewest_agents(meets)


def _fewest_agents(meets: Callable[[int], bool]) -> int:
    """Smallest ``n >= 1`` with ``meets(n)``, for a ``meets`` that stays true once true."""
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
