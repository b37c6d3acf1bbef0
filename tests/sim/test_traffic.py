"""The shared traffic model and the statistics both testers keep."""

from __future__ import annotations

import math
import random
import tomllib
from pathlib import Path

import pytest

from callgate.config import parse_stack
from callgate.planning.traffic_profile import load_profile
from callgate.sim.stats import Estimate, Levels, Summary, max_overlap, percentile, t975
from callgate.sim.traffic import DAY_S, HOUR_S, Traffic, numbers_for

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "examples" / "profile-business-hours.toml"
N1 = "+15550000001"


def test_profile_arrivals_follow_the_hour_of_day() -> None:
    """Over 30 days each hour's arrivals match the profile x factor within 5 Poisson sigmas."""
    profile = load_profile(PROFILE)
    traffic = Traffic(numbers=(N1,), aht_s=180.0, profile=profile, factor=0.5)
    rng = random.Random(1)
    days = 30
    counts = [0] * 24
    t = traffic.next_arrival(0.0, rng)
    while t < days * DAY_S:
        counts[int(t // HOUR_S) % 24] += 1
        t = traffic.next_arrival(t, rng)
    for hour, seen in enumerate(counts):
        expected = profile.calls[hour] * 0.5 * days
        assert abs(seen - expected) <= 5 * math.sqrt(expected), (hour, seen, expected)
    assert math.isclose(traffic.expected_calls(0.0, DAY_S), profile.total * 0.5)


@pytest.mark.parametrize("dist", ["exp", "lognormal", "fixed"])
def test_handle_times_have_the_mean_asked_for(dist: str) -> None:
    """Exponential, lognormal and fixed handle times all average --aht (within 3%)."""
    traffic = Traffic(numbers=(N1,), aht_s=180.0, rate_per_s=1.0, handle_dist=dist,  # type: ignore[arg-type]
                      lognormal_sigma=0.8)
    rng = random.Random(7)
    times = [traffic.handle_time(rng) for _ in range(40_000)]
    assert math.isclose(sum(times) / len(times), 180.0, rel_tol=0.03)
    assert (min(times) == max(times)) is (dist == "fixed")


def test_draws_are_reproducible_and_mix_directions_and_numbers() -> None:
    """One seed gives the same calls; direction, number, patience and deaths follow the model."""
    numbers = ("+15550000001", "+15550000002", "+15550000003")
    traffic = Traffic(numbers=numbers, aht_s=60.0, rate_per_s=1.0, patience_s=30.0,
                      outbound_fraction=0.25, die_fraction=0.1)
    first = [traffic.draw(i, float(i), random.Random(3)) for i in range(5)]
    assert first == [traffic.draw(i, float(i), random.Random(3)) for i in range(5)]
    rng = random.Random(5)
    calls = [traffic.draw(i, float(i), rng) for i in range(20_000)]
    outbound = sum(c.direction == "outbound" for c in calls) / len(calls)
    dying = [c for c in calls if c.dies_after_s is not None]
    assert abs(outbound - 0.25) < 0.02 and abs(len(dying) / len(calls) - 0.1) < 0.01
    assert {c.number for c in calls} == set(numbers)
    assert all(0 <= c.dies_after_s <= c.handle_s for c in dying if c.dies_after_s is not None)
    assert math.isclose(sum(c.patience_s for c in calls) / len(calls), 30.0, rel_tol=0.05)


def test_bad_model_values_are_refused_by_name() -> None:
    """A rate, fraction or mean out of range raises ValueError naming the field."""
    with pytest.raises(ValueError, match="rate_per_s"):
        Traffic(numbers=(N1,), aht_s=60.0)
    with pytest.raises(ValueError, match="outbound_fraction"):
        Traffic(numbers=(N1,), aht_s=60.0, rate_per_s=1.0, outbound_fraction=1.5)
    with pytest.raises(ValueError, match="aht_s"):
        Traffic(numbers=(N1,), aht_s=0.0, rate_per_s=1.0)


def test_numbers_default_to_the_stack_and_unknown_ones_are_named() -> None:
    """Numbers default to the stack's, --accounts filters them, unknown ones are named."""
    stack = parse_stack(tomllib.loads(f"""
[trunks.t]
max_concurrent = 5
[plans.p]
max_concurrent = 5
[accounts.a]
plan = "p"
[accounts.b]
plan = "p"
[numbers."{N1}"]
account = "a"
trunk = "t"
max_concurrent = 1
[numbers."+15550000002"]
account = "b"
trunk = "t"
max_concurrent = 1
"""))
    assert numbers_for(stack) == (N1, "+15550000002")
    assert numbers_for(stack, accounts=["b"]) == ("+15550000002",)
    with pytest.raises(ValueError, match=r"\+15559999999"):
        numbers_for(stack, ["+15559999999"])
    with pytest.raises(ValueError, match="nope"):
        numbers_for(stack, accounts=["nope"])


def test_levels_integrate_peak_mean_and_time_at_cap() -> None:
    """Peak, time-weighted mean and time at cap are exact; a late change is applied in order."""
    levels = Levels({"number:x": 2}, 0.0, 100.0, lag_s=10.0, buckets=10)
    one = ((0, 1),)
    levels.change(10.0, one, +1)
    levels.change(30.0, one, +1)
    levels.advance(35.0)
    levels.change(25.0, one, -1)  # learnt late: ends before the second start
    levels.change(40.0, one, +1)
    levels.change(60.0, one, -1)
    levels.change(60.0, one, -1)
    levels.finish()
    assert levels.peak == [2]
    assert math.isclose(levels.mean(0), (15 * 1 + 10 * 1 + 20 * 2) / 100)
    assert math.isclose(levels.at_cap_s[0], 20.0)
    assert levels.series(0)[:7] == [0, 1, 1, 1, 2, 2, 2]


def test_max_overlap_counts_admissions_above_the_cap() -> None:
    """Back-to-back intervals do not overlap; each start above the cap counts once."""
    assert max_overlap([(0, 1, 1), (1, 2, 1)], cap=1) == (1, 0)
    assert max_overlap([(0, 3, 1), (1, 4, 1), (2, 5, 1)], cap=1) == (3, 2)
    assert max_overlap([(0, 3, 2)], cap=1) == (2, 1)


def test_batch_means_interval_and_percentiles() -> None:
    """The interval is mean +- t(0.975, n-1) * s / sqrt(n); percentiles interpolate."""
    est = Estimate.of([(1, 10), (2, 10), (3, 10), (0, 0)])
    assert est is not None and est.batches == 3
    assert math.isclose(est.value, 0.2)
    assert math.isclose(est.half_width, t975(2) * 0.1 / math.sqrt(3))
    assert Estimate.of([(1, 10)]) is None
    assert percentile([0.0, 10.0], 0.9) == 9.0
    assert Summary.of([]).n == 0 and Summary.of([3.0, 1.0, 2.0]).p50 == 2.0
