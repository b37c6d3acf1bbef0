"""The simulator against Erlang B, C and A: one cap, Poisson arrivals, exponential times.

Each run drives the real gate (memory store) through about 100,000 calls and estimates
the probability with batch means; the theory must lie inside the simulation's 95%
confidence interval, and that interval must be no wider than +-0.005.
"""

from __future__ import annotations

import math
import tomllib

from callgate.config import Stack, parse_stack
from callgate.planning.erlang import erlang_b, erlang_c
from callgate.planning.erlang_a import erlang_a
from callgate.sim.simulate import Simulator
from callgate.sim.stats import Estimate
from callgate.sim.traffic import Traffic

NUMBER = "+15550000001"
AHT_S = 60.0
CALLS = 100_000
MAX_HALF_WIDTH = 0.005


def one_cap_stack(cap: int, queue_max: int) -> Stack:
    """One trunk capped at ``cap``; every other layer far above it; long TTLs and waits."""
    return parse_stack(tomllib.loads(f"""
[gate]
lease_ttl = "1d"
max_call_duration = "1d"
poll_timeout = "1d"

[trunks.t]
max_concurrent = {cap}

[plans.p]
max_concurrent = 100000

[accounts.a]
plan = "p"

[numbers."{NUMBER}"]
account = "a"
trunk = "t"
max_concurrent = 100000

[inbound]
queue_max = {queue_max}
max_wait = "1d"
"""))


def estimate(stack: Stack, traffic_erlangs: float, patience_s: float, name: str,
             seed: int) -> Estimate:
    rate = traffic_erlangs / AHT_S
    duration = CALLS / rate
    traffic = Traffic(numbers=(NUMBER,), aht_s=AHT_S, rate_per_s=rate, patience_s=patience_s)
    result = Simulator(stack, traffic, duration_s=duration, seed=seed,
                       warmup_s=duration / 50, batches=20).run()
    found = result.estimates[name]
    assert found is not None
    return found


def check(found: Estimate, truth: float) -> None:
    assert found.half_width <= MAX_HALF_WIDTH, found
    assert found.covers(truth), f"theory {truth:.5f} outside {found}"


def test_blocking_matches_erlang_b() -> None:
    """No queue (queue_max 0), 5 lines, 3 erlangs: the share rejected is Erlang B's."""
    found = estimate(one_cap_stack(5, 0), 3.0, math.inf, "p_rejected", seed=1)
    check(found, erlang_b(3.0, 5))


def test_waiting_matches_erlang_c() -> None:
    """Endless patience and queue, 5 lines, 2 erlangs: the share queued is Erlang C's p_wait."""
    found = estimate(one_cap_stack(5, 100_000), 2.0, math.inf, "p_queued", seed=1)
    check(found, erlang_c(2.0, 5, AHT_S, 20.0).p_wait)


def test_abandonment_matches_erlang_a() -> None:
    """Patience half the AHT, 8 lines, 6 erlangs: the share hanging up is Erlang A's p_abandon."""
    patience_s = AHT_S / 2
    found = estimate(one_cap_stack(8, 100_000), 6.0, patience_s, "p_abandoned", seed=1)
    check(found, erlang_a(6.0, 8, AHT_S, patience_s, 20.0).p_abandon)
