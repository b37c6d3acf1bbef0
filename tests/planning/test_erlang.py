"""Tests for callgate.planning.erlang: published tables plus independent exact computations."""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callgate.planning.erlang import (
    QueueStats,
    agents_for_asa,
    agents_for_service_level,
    erlang_b,
    erlang_c,
    lines_for_blocking,
    traffic_for_blocking,
)
from callgate.planning.erlang_a import (
    AbandonStats,
    agents_for_abandon,
    agents_for_service_level_abandon,
    erlang_a,
)

# ------------------------------------------------------------------ independent references


def exact_erlang_b(traffic: Fraction, lines: int) -> Fraction:
    """Erlang B as the textbook ratio (A^N/N!) / sum_k A^k/k!, in exact rationals."""
    term = Fraction(1)
    total = Fraction(1)
    for k in range(1, lines + 1):
        term = term * traffic / k
        total += term
    return term / total


def decimal_erlang_b_table(traffic: str, top: int, prec: int = 50) -> list[Decimal]:
    """B(A, n) for n = 0..top by the plain recursion from B(0) = 1 at ``prec`` digits."""
    with localcontext() as ctx:
        ctx.prec = prec
        a = Decimal(traffic)
        b = Decimal(1)
        table = [b]
        for n in range(1, top + 1):
            ab = a * b
            b = ab / (n + ab)
            table.append(b)
    return table


def exact_erlang_c(traffic: Fraction, agents: int) -> Fraction:
    """P(wait) in M/M/N from the state probabilities, in exact rationals (agents > traffic)."""
    terms = [Fraction(1)]
    for k in range(1, agents + 1):
        terms.append(terms[-1] * traffic / k)
    waiting = terms[agents] * agents / (agents - traffic)
    return waiting / (sum(terms[:agents]) + waiting)


def relative_error(got: float, want: Decimal | Fraction) -> float:
    """|got - want| / want, computed without rounding ``want`` first."""
    if isinstance(want, Fraction):
        return float(abs(Fraction(got) - want) / want)
    return float(abs(Decimal(got) - want) / want)


def hypoexponential_cdf(rates: list[float], horizon: float) -> float:
    """P(sum of independent Exp(rates) <= horizon) by uniformisation of the stage chain."""
    top = max(rates)
    stages = len(rates)
    dist = [0.0] * stages
    dist[stages - 1] = 1.0
    absorbed = 0.0
    poisson = math.exp(-top * horizon)
    covered = poisson
    result = 0.0
    m = 0
    while covered < 1.0 - 1e-16 and m < 10_000:
        m += 1
        moved = [rates[j] / top * dist[j] for j in range(stages)]
        absorbed += moved[0]
        dist = [
            dist[j] - moved[j] + (moved[j + 1] if j + 1 < stages else 0.0) for j in range(stages)
        ]
        poisson *= top * horizon / m
        covered += poisson
        result += poisson * absorbed
    return result


def birth_death_erlang_a(
    traffic: float, agents: int, aht: float, patience: float, answer: float
) -> tuple[float, float, float, float]:
    """(p_wait, p_abandon, asa_answered, service_level_answered) summed state by state.

    Stationary law of the M/M/N+M chain, truncated once the queue states fall below 1e-18
    of the total (they shrink geometrically once N mu + k theta exceeds lambda); a caller
    arriving with k ahead goes through k+1 stages (j ahead: the next event is a departure
    ahead at rate N mu + j theta or her own hang-up at rate theta), so she is answered
    with probability prod_j (N mu + j theta)/(N mu + (j+1) theta), her stage times are
    Exp(N mu + (j+1) theta) whatever happens, and within T by the hypoexponential law.
    """
    mu, theta = 1.0 / aht, 1.0 / patience
    lam = traffic * mu
    weights = [1.0]
    for n in range(1, agents + 1):
        weights.append(weights[-1] * traffic / n)
    depth = 0
    while depth < 5 or weights[-1] > 1e-18 * math.fsum(weights):
        depth += 1
        weights.append(weights[-1] * lam / (agents * mu + depth * theta))
    total = math.fsum(weights)
    probs = [w / total for w in weights]
    free = math.fsum(probs[:agents])
    answered = free
    answered_wait = 0.0
    in_time = free
    for k in range(depth + 1):
        rates = [agents * mu + (j + 1) * theta for j in range(k + 1)]
        p_answer = math.prod((agents * mu + j * theta) / rates[j] for j in range(k + 1))
        mass = probs[agents + k] * p_answer
        answered += mass
        answered_wait += mass * math.fsum(1.0 / r for r in rates)
        in_time += mass * hypoexponential_cdf(rates, answer)
    return 1.0 - free, 1.0 - answered, answered_wait / answered, in_time


def simulate_erlang_a(
    traffic: float, agents: int, aht: float, patience: float, answer: float, calls: int, seed: int
) -> tuple[float, float, float]:
    """Monte-Carlo (p_wait, p_abandon, service_level_answered) of an FCFS M/M/N+M queue."""
    rng = random.Random(seed)
    lam = traffic / aht
    busy_until: list[float] = []  # heap of service completion times
    queue: deque[tuple[float, float]] = deque()  # (arrival time, hang-up time)
    clock = 0.0
    waited = abandoned = in_time = 0

    def serve_next(free_at: float) -> None:
        nonlocal abandoned, in_time
        while queue:
            arrived, hang_up = queue.popleft()
            if hang_up < free_at:
                abandoned += 1
                continue
            if free_at - arrived <= answer:
                in_time += 1
            heapq.heappush(busy_until, free_at + rng.expovariate(1.0 / aht))
            return

    for _ in range(calls):
        clock += rng.expovariate(lam)
        while busy_until and busy_until[0] <= clock:
            serve_next(heapq.heappop(busy_until))
        if len(busy_until) < agents:
            in_time += 1
            heapq.heappush(busy_until, clock + rng.expovariate(1.0 / aht))
        else:
            waited += 1
            queue.append((clock, clock + rng.expovariate(1.0 / patience)))
    return waited / calls, abandoned / calls, in_time / calls


# --------------------------------------------------------------------------------- Erlang B


def test_erlang_b_matches_published_table_value() -> None:
    """B(A=2.0 erlangs, N=5 lines) is 0.0367 as in every Erlang B table."""
    assert round(erlang_b(2.0, 5), 4) == 0.0367


@pytest.mark.parametrize(
    ("traffic", "lines"),
    [
        (Fraction(1), 1),
        (Fraction(2), 5),
        (Fraction(7, 2), 3),
        (Fraction(1, 10), 4),
        (Fraction(53, 5), 11),
        (Fraction(20), 12),
        (Fraction(25), 30),
        (Fraction(401, 4), 120),
        (Fraction(300), 250),
    ],
)
def test_erlang_b_matches_exact_rational_sums(traffic: Fraction, lines: int) -> None:
    """erlang_b agrees with the exact sum (A^N/N!)/sum A^k/k! to 1e-12, fractional A too."""
    assert relative_error(erlang_b(float(traffic), lines), exact_erlang_b(traffic, lines)) < 1e-12


def test_erlang_b_large_trunk_matches_50_digit_recursion() -> None:
    """At A = 10,000 erlangs the result matches a 50-digit recursion to 1e-9 (N = 10,100 etc)."""
    table = decimal_erlang_b_table("10000", 11_000)
    for lines in (1, 5_000, 9_000, 9_800, 10_000, 10_100, 10_300, 10_600, 11_000):
        want = table[lines]
        assert want > Decimal("1e-300")
        assert relative_error(erlang_b(10_000, lines), want) <= 1e-9, lines


def test_erlang_b_keeps_accuracy_down_to_1e_minus_300() -> None:
    """Tiny blocking values down to 1e-300 keep 1e-9 accuracy; beyond the float range, 0.0."""
    table = decimal_erlang_b_table("100", 700)
    checked = 0
    for lines, want in enumerate(table):
        if want >= Decimal("1e-300"):
            assert relative_error(erlang_b(100, lines), want) <= 1e-9, lines
            checked += 1
    assert table[checked - 1] < Decimal("1e-290")  # the check reached the deep tail
    assert erlang_b(100, 5_000) == 0.0
    assert erlang_b(100_000, 10**6) == 0.0


def test_erlang_b_million_lines_and_large_search_answer() -> None:
    """erlang_b(1e5, 1e6) and lines_for_blocking(1e5, 0.01) answer (their speed: bench_plan.py)."""
    assert erlang_b(100_000, 10**6) == 0.0
    lines = lines_for_blocking(100_000, 0.01)
    assert erlang_b(100_000, lines) <= 0.01 < erlang_b(100_000, lines - 1)


def test_erlang_b_degenerate_inputs() -> None:
    """No lines block everything; no traffic on one or more lines blocks nothing."""
    assert erlang_b(5.0, 0) == 1.0
    assert erlang_b(0.0, 0) == 1.0
    assert erlang_b(0.0, 3) == 0.0
    assert erlang_b(0, 1) == 0.0


@settings(max_examples=150, deadline=None)
@given(
    traffic=st.floats(min_value=0.0, max_value=3_000.0, allow_nan=False),
    extra=st.floats(min_value=0.0, max_value=500.0, allow_nan=False),
    lines=st.integers(min_value=0, max_value=4_000),
)
def test_erlang_b_is_a_probability_decreasing_in_lines_increasing_in_traffic(
    traffic: float, extra: float, lines: int
) -> None:
    """B is in [0, 1], never rises with more lines and never falls with more traffic."""
    b = erlang_b(traffic, lines)
    assert 0.0 <= b <= 1.0
    assert erlang_b(traffic, lines + 1) <= b * (1 + 1e-12)
    assert erlang_b(traffic + extra, lines) >= b * (1 - 1e-12)


# ----------------------------------------------------------------------- inverse Erlang B

ONE_PERCENT_TABLE = [(10, 4.461), (15, 8.108), (20, 12.031), (50, 37.901), (100, 84.064)]


@pytest.mark.parametrize(("lines", "erlangs"), ONE_PERCENT_TABLE)
def test_traffic_for_blocking_matches_one_percent_table(lines: int, erlangs: float) -> None:
    """traffic_for_blocking(N, 1%) reproduces the published Erlang B table to 3 decimals."""
    assert round(traffic_for_blocking(lines, 0.01), 3) == erlangs


@pytest.mark.parametrize(("lines", "erlangs"), ONE_PERCENT_TABLE)
def test_lines_for_blocking_inverts_the_table(lines: int, erlangs: float) -> None:
    """Just under a table row's traffic needs N lines at 1%; just over needs N + 1."""
    assert lines_for_blocking(erlangs - 0.001, 0.01) == lines
    assert lines_for_blocking(erlangs + 0.001, 0.01) == lines + 1
    assert lines_for_blocking(traffic_for_blocking(lines, 0.01), 0.01) == lines


@pytest.mark.parametrize(
    ("traffic", "lines"),
    [(2.0, 5), (10.6, 11), (10.6, 20), (0.3, 1), (500.5, 480), (10_000, 10_100), (100_000, 99_092)],
)
def test_lines_for_blocking_boundary_target_exactly_met(traffic: float, lines: int) -> None:
    """A target equal to B(A, N) is met by exactly N lines, and not by N - 1."""
    target = erlang_b(traffic, lines)
    assert lines_for_blocking(traffic, target) == lines
    assert lines_for_blocking(traffic, math.nextafter(target, 0.0)) == lines + 1


@pytest.mark.parametrize(("lines", "target"), [(1, 0.5), (7, 0.02), (300, 0.001), (5_000, 0.05)])
def test_traffic_for_blocking_is_the_largest_traffic_at_grade(lines: int, target: float) -> None:
    """The returned traffic meets the grade, and 1e-9 more traffic exceeds it."""
    traffic = traffic_for_blocking(lines, target)
    assert erlang_b(traffic, lines) <= target
    assert erlang_b(traffic * (1 + 1e-9), lines) > target
    assert abs(erlang_b(traffic, lines) - target) <= 1e-9 * target


def test_zero_traffic_needs_zero_lines() -> None:
    """No traffic needs no lines, and no lines carry no traffic."""
    assert lines_for_blocking(0, 0.01) == 0
    assert traffic_for_blocking(0, 0.01) == 0.0


def test_fractional_traffic_is_accepted() -> None:
    """Fractional traffic below one erlang still needs a line, and more for a strict grade."""
    assert lines_for_blocking(0.25, 0.5) == 1
    assert lines_for_blocking(0.25, 0.005) == 3
    assert erlang_b(0.25, 3) <= 0.005 < erlang_b(0.25, 2)


# --------------------------------------------------------------------------------- Erlang C


def test_erlang_c_matches_published_example() -> None:
    """10 erlangs, 180 s AHT, 14 agents, 20 s target: C 0.1741319, SL 0.88835, ASA 7.8359 s."""
    stats = erlang_c(10, 14, 180, 20)
    assert round(stats.p_wait, 7) == 0.1741319
    assert round(stats.service_level, 5) == 0.88835
    assert round(stats.asa_s, 4) == 7.8359
    assert stats.occupancy == pytest.approx(10 / 14)
    assert stats.mean_queue_length == pytest.approx(stats.asa_s * 10 / 180)  # Little
    assert stats.stable


@pytest.mark.parametrize(
    ("traffic", "agents"),
    [(Fraction(10), 14), (Fraction(53, 5), 11), (Fraction(1, 2), 1), (Fraction(95), 110)],
)
def test_erlang_c_matches_exact_state_sum(traffic: Fraction, agents: int) -> None:
    """p_wait equals the exact M/M/N waiting probability from the state probabilities."""
    got = erlang_c(float(traffic), agents, 180, 20).p_wait
    assert relative_error(got, exact_erlang_c(traffic, agents)) < 1e-12


@pytest.mark.parametrize(("traffic", "agents"), [(10.0, 10), (10.6, 10), (3.0, 0), (1e5, 99_999)])
def test_erlang_c_unstable_queue(traffic: float, agents: int) -> None:
    """With agents <= traffic the queue is unstable: certain wait, infinite ASA, no NaN."""
    stats = erlang_c(traffic, agents, 180, 20)
    assert stats == QueueStats(
        p_wait=1.0,
        asa_s=math.inf,
        service_level=0.0,
        occupancy=1.0,
        mean_queue_length=math.inf,
        stable=False,
    )


def test_erlang_c_without_traffic() -> None:
    """No traffic means no waiting, with or without agents."""
    for agents in (0, 3):
        stats = erlang_c(0, agents, 180, 20)
        assert stats.p_wait == 0.0
        assert stats.asa_s == 0.0
        assert stats.service_level == 1.0
        assert stats.mean_queue_length == 0.0
        assert stats.stable


def test_erlang_c_probabilities_stay_in_range_near_saturation() -> None:
    """Just above saturation and for huge staffing every figure is finite and in range."""
    for traffic, agents in [(10.999999, 11), (1e5, 100_001), (1e5, 10**6), (1e-9, 1)]:
        stats = erlang_c(traffic, agents, 180, 20)
        assert 0.0 <= stats.p_wait <= 1.0
        assert 0.0 <= stats.service_level <= 1.0
        assert math.isfinite(stats.asa_s) and math.isfinite(stats.mean_queue_length)


def test_agents_for_service_level_starts_at_first_stable_staffing() -> None:
    """At 10.6 erlangs a low target is met by 11 agents (floor(A)+1), not round(A+1) = 12."""
    assert erlang_c(10.6, 11, 180, 20).service_level >= 0.15
    assert agents_for_service_level(10.6, 180, 20, 0.15) == 11


def test_agents_for_service_level_classic_example() -> None:
    """10 erlangs at 180 s AHT need 14 agents for 80/20 (13 give only about 72%)."""
    assert agents_for_service_level(10, 180, 20, 0.8) == 14
    assert erlang_c(10, 13, 180, 20).service_level < 0.8


@pytest.mark.parametrize(
    ("traffic", "agents"), [(10.0, 14), (10.6, 11), (2.25, 5), (480.5, 500), (5_000, 5_070)]
)
def test_agents_for_service_level_boundary_target_exactly_met(traffic: float, agents: int) -> None:
    """A target equal to erlang_c's service level at N is met by exactly N agents."""
    level = erlang_c(traffic, agents, 240, 30).service_level
    assert agents_for_service_level(traffic, 240, 30, level) == agents
    assert agents_for_service_level(traffic, 240, 30, math.nextafter(level, 1.0)) == agents + 1


@pytest.mark.parametrize(("traffic", "agents"), [(10.0, 14), (10.6, 12), (480.5, 500)])
def test_agents_for_asa_boundary_target_exactly_met(traffic: float, agents: int) -> None:
    """An ASA target equal to erlang_c's ASA at N is met by exactly N agents."""
    asa = erlang_c(traffic, agents, 180, 20).asa_s
    assert agents_for_asa(traffic, 180, asa) == agents
    assert agents_for_asa(traffic, 180, math.nextafter(asa, 0.0)) == agents + 1


@pytest.mark.parametrize("traffic", [0.4, 3.0, 10.6, 37.25])
def test_agents_searches_match_brute_force(traffic: float) -> None:
    """The incremental searches agree with a brute-force scan of erlang_c."""

    scan = [erlang_c(traffic, agents, 300, 15) for agents in range(int(traffic) + 40)]
    for level in (0.1, 0.5, 0.8, 0.95, 0.999):
        want = next(n for n, s in enumerate(scan) if s.stable and s.service_level >= level)
        assert agents_for_service_level(traffic, 300, 15, level) == want
    for asa in (1.0, 20.0, 120.0):
        want = next(n for n, s in enumerate(scan) if s.stable and s.asa_s <= asa)
        assert agents_for_asa(traffic, 300, asa) == want


def test_agents_for_service_level_respects_max_occupancy() -> None:
    """A max occupancy adds agents until traffic/agents is within it, and no more."""
    unconstrained = agents_for_service_level(100, 180, 20, 0.8)
    assert 100 / unconstrained > 0.85
    capped = agents_for_service_level(100, 180, 20, 0.8, max_occupancy=0.85)
    assert capped == math.ceil(100 / 0.85) == 118
    assert agents_for_service_level(100, 180, 20, 0.8, max_occupancy=1.0) == unconstrained


def test_agents_for_zero_traffic_is_zero() -> None:
    """No traffic needs no agents in every search."""
    assert agents_for_service_level(0, 180, 20, 0.8) == 0
    assert agents_for_asa(0, 180, 20) == 0
    assert agents_for_service_level_abandon(0, 180, 60, 20, 0.8) == 0


# --------------------------------------------------------------------------------- Erlang A


def test_erlang_a_with_endless_patience_is_erlang_c() -> None:
    """patience_s = 1e12 reproduces Erlang C to 1e-6, with (almost) nobody hanging up."""
    for traffic, agents in [(10, 14), (10.6, 11), (95.5, 105), (0.5, 1)]:
        c = erlang_c(traffic, agents, 180, 20)
        a = erlang_a(traffic, agents, 180, 1e12, 20)
        assert a.p_wait == pytest.approx(c.p_wait, rel=1e-6)
        assert a.service_level_answered == pytest.approx(c.service_level, rel=1e-6)
        assert a.asa_answered_s == pytest.approx(c.asa_s, rel=1e-6)
        assert a.mean_wait_all_s == pytest.approx(c.asa_s, rel=1e-6)
        assert a.occupancy == pytest.approx(c.occupancy, rel=1e-6)
        assert a.p_abandon < 1e-6


@pytest.mark.parametrize(
    ("traffic", "agents", "aht", "patience", "answer"),
    [
        (1.5, 2, 1.0, 1.0, 0.5),
        (3.0, 2, 1.0, 2.0, 0.3),
        (0.8, 1, 2.0, 0.5, 1.0),
        (4.0, 5, 180.0, 540.0, 36.0),
        (6.5, 4, 120.0, 60.0, 20.0),
    ],
)
def test_erlang_a_matches_state_by_state_birth_death_sum(
    traffic: float, agents: int, aht: float, patience: float, answer: float
) -> None:
    """All Erlang A figures match an independent state-by-state sum of the M/M/N+M chain."""
    p_wait, p_abandon, asa, in_time = birth_death_erlang_a(traffic, agents, aht, patience, answer)
    got = erlang_a(traffic, agents, aht, patience, answer)
    assert got.p_wait == pytest.approx(p_wait, rel=1e-9)
    assert got.p_abandon == pytest.approx(p_abandon, rel=1e-9)
    assert got.asa_answered_s == pytest.approx(asa, rel=1e-9)
    assert got.service_level_answered == pytest.approx(in_time, rel=1e-9)
    assert got.mean_wait_all_s == pytest.approx(p_abandon * patience, rel=1e-9)
    assert got.occupancy == pytest.approx(traffic * (1 - p_abandon) / agents, rel=1e-9)


def test_erlang_a_matches_monte_carlo_simulation() -> None:
    """A seeded simulation of an FCFS queue with hang-ups agrees within sampling error."""
    p_wait, p_abandon, in_time = simulate_erlang_a(3.0, 3, 1.0, 0.5, 0.25, 200_000, seed=7)
    got = erlang_a(3.0, 3, 1.0, 0.5, 0.25)
    assert got.p_wait == pytest.approx(p_wait, abs=0.01)
    assert got.p_abandon == pytest.approx(p_abandon, abs=0.01)
    assert got.service_level_answered == pytest.approx(in_time, abs=0.01)


@pytest.mark.parametrize(("traffic", "patience"), [(10.0, 60.0), (10.6, 5.0), (250.0, 600.0)])
def test_erlang_a_abandonment_is_a_probability_decreasing_in_agents(
    traffic: float, patience: float
) -> None:
    """p_abandon stays in [0, 1] and falls as agents are added, from 0 agents up past A."""
    previous = 1.0
    for agents in range(0, int(traffic * 1.5) + 3):
        stats = erlang_a(traffic, agents, 180, patience, 20)
        for value in (stats.p_wait, stats.p_abandon, stats.service_level_answered):
            assert 0.0 <= value <= 1.0
        assert 0.0 <= stats.occupancy <= 1.0
        assert stats.p_abandon <= previous
        previous = stats.p_abandon
    assert previous < 0.05


def test_erlang_a_without_agents_everybody_hangs_up() -> None:
    """With no agents every caller waits for the whole patience and hangs up."""
    assert erlang_a(5.0, 0, 180, 45, 20) == AbandonStats(
        p_wait=1.0,
        p_abandon=1.0,
        asa_answered_s=math.inf,
        mean_wait_all_s=45.0,
        service_level_answered=0.0,
        occupancy=0.0,
    )


def test_erlang_a_overload_follows_the_fluid_limit() -> None:
    """At 100,000 erlangs on 50,000 agents about half the callers hang up; nothing overflows."""
    stats = erlang_a(100_000, 50_000, 180, 90, 20)
    assert stats.p_wait == pytest.approx(1.0)
    assert stats.p_abandon == pytest.approx(0.5, abs=0.01)
    assert stats.occupancy == pytest.approx(1.0, abs=0.01)
    assert stats.mean_wait_all_s == pytest.approx(45.0, abs=1.0)  # P(abandon) x patience


def test_erlang_a_patient_callers_on_an_overloaded_trunk() -> None:
    """Very patient callers on too few agents: the excess traffic, and only it, hangs up."""
    stats = erlang_a(10, 5, 180, 1e12, 20)
    assert stats.p_wait == 1.0
    assert stats.p_abandon == pytest.approx(0.5, rel=1e-9)
    assert stats.service_level_answered < 1e-9


def test_erlang_a_without_traffic_is_idle() -> None:
    """No traffic: nobody waits, nobody hangs up."""
    stats = erlang_a(0, 4, 180, 60, 20)
    assert (stats.p_wait, stats.p_abandon, stats.service_level_answered) == (0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("traffic", "patience", "level"),
    [(10.0, 60.0, 0.8), (10.6, 30.0, 0.5), (2.0, 300.0, 0.95), (40.0, 10.0, 0.7)],
)
def test_agents_for_service_level_abandon_matches_scan_from_one(
    traffic: float, patience: float, level: float
) -> None:
    """The search returns the smallest N >= 1 whose answered service level meets the target."""
    agents = 1
    while erlang_a(traffic, agents, 180, patience, 20).service_level_answered < level:
        agents += 1
    assert agents_for_service_level_abandon(traffic, 180, patience, 20, level) == agents


# ----------------------------------------------------------------------------- edge inputs


@pytest.mark.parametrize(("traffic", "agents"), [(2.0, 5), (9.5, 10), (95.5, 105)])
def test_erlang_c_answer_target_zero_is_one_minus_p_wait(traffic: float, agents: int) -> None:
    """target_answer_s = 0 is legal: the service level is the share who do not wait."""
    stats = erlang_c(traffic, agents, 180, 0)
    assert stats.service_level == pytest.approx(1.0 - stats.p_wait, rel=1e-12)
    assert stats.service_level == pytest.approx(
        erlang_c(traffic, agents, 180, 1e-9).service_level, rel=1e-9)


def test_agents_for_service_level_with_answer_target_zero() -> None:
    """With a 0 s target the search finds the fewest agents with 1 - p_wait >= the goal."""
    want = next(n for n in range(11, 100) if 1 - erlang_c(10, n, 180, 0).p_wait >= 0.8)
    assert agents_for_service_level(10, 180, 0, 0.8) == want
    assert agents_for_service_level_abandon(10, 180, 60, 0, 0.8) == next(
        n for n in range(1, 100)
        if erlang_a(10, n, 180, 60, 0).service_level_answered >= 0.8)


@pytest.mark.parametrize(("traffic", "agents"), [(6.0, 8), (3.0, 2), (30.0, 25), (0.4, 1)])
def test_erlang_a_answer_target_zero_counts_only_the_callers_who_never_wait(
        traffic: float, agents: int) -> None:
    """Erlang A with target 0 s: the answered-at-once share is 1 - p_wait, the 0+ limit."""
    stats = erlang_a(traffic, agents, 180, 60, 0)
    assert stats.service_level_answered == pytest.approx(1.0 - stats.p_wait, rel=1e-12)
    near = erlang_a(traffic, agents, 180, 60, 1e-6).service_level_answered
    assert stats.service_level_answered == pytest.approx(near, rel=1e-6)


@pytest.mark.parametrize(("traffic", "agents"), [(6.0, 8), (3.0, 2), (30.0, 25), (0.4, 1)])
def test_erlang_a_without_patience_is_erlang_b(traffic: float, agents: int) -> None:
    """patience_s = 0: whoever finds every agent busy hangs up at once, Erlang B's loss."""
    stats = erlang_a(traffic, agents, 180, 0, 20)
    blocking = erlang_b(traffic, agents)
    assert stats.p_abandon == stats.p_wait == blocking
    assert stats.service_level_answered == 1.0 - blocking
    assert (stats.asa_answered_s, stats.mean_wait_all_s) == (0.0, 0.0)
    assert stats.occupancy == pytest.approx(traffic * (1 - blocking) / agents, rel=1e-12)
    tiny = erlang_a(traffic, agents, 180, 1e-6, 20)  # the limit agrees with the closed form
    assert tiny.p_abandon == pytest.approx(blocking, rel=1e-6)


@pytest.mark.parametrize(("traffic", "agents"), [(6.0, 8), (10.6, 11), (95.5, 105)])
def test_erlang_a_with_endless_patience_equals_erlang_c_when_stable(
        traffic: float, agents: int) -> None:
    """patience_s = math.inf on a stable queue is exactly Erlang C, nobody hanging up."""
    a = erlang_a(traffic, agents, 180, math.inf, 20)
    c = erlang_c(traffic, agents, 180, 20)
    assert (a.p_wait, a.service_level_answered, a.asa_answered_s, a.mean_wait_all_s,
            a.occupancy, a.p_abandon) == (c.p_wait, c.service_level, c.asa_s, c.asa_s,
                                          c.occupancy, 0.0)


@pytest.mark.parametrize(("traffic", "agents"), [(10.0, 5), (30.0, 25), (7.0, 7)])
def test_erlang_a_with_endless_patience_past_the_traffic_takes_the_limit(
        traffic: float, agents: int) -> None:
    """patience_s = math.inf on agents <= traffic: everybody waits unboundedly, the excess
    1 - N/A hangs up (the limit of ever more patient callers)."""
    stats = erlang_a(traffic, agents, 180, math.inf, 20)
    assert stats.p_wait == 1.0 and stats.service_level_answered == 0.0
    assert stats.asa_answered_s == math.inf and stats.mean_wait_all_s == math.inf
    assert stats.p_abandon == max(0.0, 1 - agents / traffic)
    if agents < traffic:  # the finite-patience figures approach the limit
        assert erlang_a(traffic, agents, 180, 1e9, 20).p_abandon == pytest.approx(
            stats.p_abandon, rel=1e-6)


def test_erlang_a_inverses_accept_both_ends_of_patience() -> None:
    """The Erlang A searches take patience 0 (Erlang B lines) and inf (Erlang C agents)."""
    assert agents_for_abandon(10, 180, 0, 0.01) == lines_for_blocking(10, 0.01)
    assert agents_for_service_level_abandon(10, 180, math.inf, 20, 0.8) == (
        agents_for_service_level(10, 180, 20, 0.8))


# ------------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: erlang_b(-1, 5), "traffic"),
        (lambda: erlang_b(math.nan, 5), "traffic"),
        (lambda: erlang_b(math.inf, 5), "traffic"),
        (lambda: erlang_b(1.0, -1), "lines"),
        (lambda: erlang_b(1.0, 2.5), "lines"),  # type: ignore[arg-type]
        (lambda: lines_for_blocking(5, 0.0), "target"),
        (lambda: lines_for_blocking(5, 1.0), "target"),
        (lambda: lines_for_blocking(-2, 0.01), "traffic"),
        (lambda: traffic_for_blocking(-1, 0.01), "lines"),
        (lambda: traffic_for_blocking(5, 1.5), "target"),
        (lambda: erlang_c(5, -6, 180, 20), "agents"),
        (lambda: erlang_c(5, 6, 0, 20), "aht_s"),
        (lambda: erlang_c(5, 6, 180, -1), "target_answer_s"),
        (lambda: agents_for_service_level(5, 180, 20, 1.0), "service_level"),
        (lambda: agents_for_service_level(5, 180, 20, 0.8, max_occupancy=0.0), "max_occupancy"),
        (lambda: agents_for_asa(5, 180, 0), "asa_s"),
        (lambda: erlang_a(5, 6, 180, -1, 20), "patience_s"),
        (lambda: erlang_a(5, 6, 180, math.nan, 20), "patience_s"),
        (lambda: erlang_a(5, 6, 180, 60, math.inf), "target_answer_s"),
        (lambda: erlang_c(5, 6, 180, math.inf), "target_answer_s"),
        (lambda: agents_for_service_level_abandon(5, 180, 60, 20, 0.0), "service_level"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(
    call: Callable[[], object], argument: str
) -> None:
    """Invalid arguments raise ValueError whose message starts with the argument's name."""
    with pytest.raises(ValueError, match=rf"^{argument} must be"):
        call()


def test_negative_traffic_message() -> None:
    """The message states the unit and echoes the bad value."""
    with pytest.raises(ValueError, match=r"^traffic must be >= 0 erlangs, got -1$"):
        erlang_b(-1, 3)
