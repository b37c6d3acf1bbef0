"""The simulator's paths: provider faults, retries, dying workers, renewals, determinism."""

from __future__ import annotations

import itertools
import json
import math
import tomllib
from typing import Any

from callgate.config import Stack, parse_stack
from callgate.model import Call, Decision, Outcome
from callgate.sim.results import to_document
from callgate.sim.simulate import EPOCH0, LeaseRecord, Simulator
from callgate.sim.traffic import KeyFault, Traffic

N1, N2, N3 = "+15550000001", "+15550000002", "+15550000003"


def stack_of(text: str) -> Stack:
    return parse_stack(tomllib.loads(text))


def one_number(cap: int, extra: str = "", gate: str = "") -> Stack:
    return stack_of(f"""
[gate]
lease_ttl = "30s"
{gate}

[trunks.t]
max_concurrent = 100

[plans.p]
max_concurrent = 100

[accounts.a]
plan = "p"

[numbers."{N1}"]
account = "a"
trunk = "t"
max_concurrent = {cap}
{extra}
""")


PROVIDER_STACK = f"""
[gate]
lease_ttl = "30s"

[trunks.t]
max_concurrent = 40

[plans.p]
max_concurrent = 40

[accounts.a]
plan = "p"

[number_defaults]
account = "a"
trunk = "t"
max_concurrent = 15

[numbers."{N1}"]
[numbers."{N2}"]
[numbers."{N3}"]

[providers.llm]
keys = ["a", "b", "c"]
sessions_per_key = 6

[providers.stt]
keys = ["s"]
sessions_per_key = 40
"""


def test_429_burst_moves_sessions_to_other_keys_and_no_call_lacks_a_session() -> None:
    """A 429 burst: no session on the cooling key, other keys take over, no lease lacks a key."""
    stack = stack_of(PROVIDER_STACK)
    fault = KeyFault("llm", "a", start_s=600.0, duration_s=600.0, retry_after_s=45.0)
    traffic = Traffic(numbers=(N1, N2, N3), aht_s=60.0, rate_per_s=0.15, patience_s=60.0,
                      faults=(fault,))
    log: list[LeaseRecord] = []
    result = Simulator(stack, traffic, duration_s=1800.0, seed=3, lease_log=log).run()

    assert all(set(lease.keys) == {"llm", "stt"} for lease in log)
    spells = [(a, b) for scope, a, b in result.cooldowns if scope == "llm:a"]
    assert spells[0][0] == 600.0 and spells[-1][1] >= 1200.0
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(spells))
    on_a = [lease.t_s for lease in log if lease.keys["llm"] == "a"]
    assert not [t for t in on_a for a, b in spells if a <= t < b]
    during = [lease.keys["llm"] for lease in log if 600.0 <= lease.t_s < 1200.0]
    before = [lease.keys["llm"] for lease in log if lease.t_s < 600.0]
    assert "a" in before and "a" not in during
    assert during.count("b") > 10 and during.count("c") > 10
    assert result.counts.rejected == 0


def test_outbound_retries_honour_retry_after_with_attempt_plus_one() -> None:
    """A refused outbound call asks again retry_after_s later with attempt + 1 (then rejected)."""
    stack = one_number(1, extra="""
[outbound]
retry_base = "10s"
retry_max = "40s"
jitter = "none"
max_attempts = 3
""")
    traffic = Traffic(numbers=(N1,), aht_s=100.0, handle_dist="fixed", rate_per_s=0.05,
                      outbound_fraction=1.0)
    simulator = Simulator(stack, traffic, duration_s=3600.0, seed=5)
    asks: list[tuple[float, Call, Decision]] = []
    acquire = simulator.gate.acquire

    def logged(call: Call, **kwargs: Any) -> Decision:
        decision = acquire(call, **kwargs)
        asks.append((simulator.clock() - EPOCH0, call, decision))
        return decision

    simulator.gate.acquire = logged  # type: ignore[method-assign]
    result = simulator.run()

    by_call: dict[str, list[tuple[float, Call, Decision]]] = {}
    for ask in asks:
        by_call.setdefault(ask[1].call_id, []).append(ask)
    retried = [steps for steps in by_call.values() if len(steps) > 1]
    assert retried
    for steps in retried:
        for (t0, call0, d0), (t1, call1, _) in itertools.pairwise(steps):
            assert d0.outcome is Outcome.RETRY_LATER and d0.retry_after_s is not None
            assert math.isclose(t1 - t0, max(d0.retry_after_s, 1e-3), abs_tol=1e-6)
            assert call1.attempt == call0.attempt + 1
    assert result.counts.rejected_by_reason["max_attempts"] > 0
    assert result.counts.retried == sum(
        1 for _, _, d in asks if d.outcome is Outcome.RETRY_LATER)


def test_dying_workers_give_their_slot_back_at_lease_expiry() -> None:
    """A crashed worker's slot returns when its lease expires: not before, and not never."""
    stack = one_number(1, extra="""
[inbound]
queue_max = 3
max_wait = "1d"
""", gate='poll_timeout = "1h"')
    # Three times the arrivals the slot can serve: a caller is always waiting for it.
    traffic = Traffic(numbers=(N1,), aht_s=100.0, handle_dist="fixed", rate_per_s=0.05,
                      die_fraction=1.0)
    log: list[LeaseRecord] = []
    result = Simulator(stack, traffic, duration_s=3000.0, seed=2, lease_log=log).run()

    starts = [lease.t_s for lease in log]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) > 10
    assert min(gaps) >= 30.0 - 1e-6
    assert max(gaps) <= 100.0 + 30.0 + 1e-3
    assert result.counts.died == result.counts.admitted
    assert max(row.peak for row in result.scopes) == 1


def test_healthy_calls_keep_their_lease_and_max_call_duration_cuts_it() -> None:
    """Long calls are renewed to their end; a shorter max_call_duration cuts every lease."""
    traffic = Traffic(numbers=(N1,), aht_s=300.0, handle_dist="fixed", rate_per_s=0.01)
    kept = Simulator(one_number(50), traffic, duration_s=3600.0, seed=1).run()
    assert kept.counts.lost == 0 and kept.counts.completed == kept.counts.admitted > 10

    capped = one_number(50, gate='max_call_duration = "2m"')
    cut = Simulator(capped, traffic, duration_s=3600.0, seed=1).run()
    assert cut.counts.lost == cut.counts.admitted > 10 and cut.counts.completed == 0


def test_same_seed_same_run_other_seed_other_run() -> None:
    """The run is a function of the seed: one random generator, ties broken in a fixed order."""
    stack = stack_of(PROVIDER_STACK)
    traffic = Traffic(numbers=(N1, N2, N3), aht_s=60.0, rate_per_s=0.3, patience_s=40.0,
                      outbound_fraction=0.3, die_fraction=0.05, handle_dist="lognormal",
                      faults=(KeyFault("llm", "b", 300.0, 300.0),))

    def document(seed: int) -> dict[str, Any]:
        doc = to_document(Simulator(stack, traffic, duration_s=1200.0, seed=seed).run())
        doc.pop("perf")
        return doc

    first = document(11)
    assert first == document(11)
    assert first != document(12)


def test_levels_and_bottleneck_name_the_full_layer() -> None:
    """At twice its load a number sits at its cap, peaks at it and is named the bottleneck."""
    stack = one_number(4, extra="""
[inbound]
queue_max = 10
max_wait = "2m"
""")
    traffic = Traffic(numbers=(N1,), aht_s=120.0, rate_per_s=8 / 120.0, patience_s=60.0)
    result = Simulator(stack, traffic, duration_s=7200.0, seed=4).run()
    number = next(row for row in result.scopes if row.key == f"number:{N1}")
    trunk = next(row for row in result.scopes if row.key == "trunk:t")
    assert number.peak == 4 and number.at_cap > 0.5
    assert 3.0 < number.mean <= 4.0 and trunk.mean == number.mean
    assert result.bottleneck is not None
    assert (result.bottleneck["layer"], result.bottleneck["scope"]) == ("number", N1)
    assert result.counts.queued > 0 and result.counts.promoted > 0
    assert result.counts.abandoned > 0
    waits = result.waits["queued_inbound"]
    assert 0 < waits.p50 <= waits.p90 <= waits.p99 <= waits.max <= 120.0


def _arrivals_of(stack: Stack, traffic: Traffic, seed: int) -> list[tuple[float, str]]:
    simulator = Simulator(stack, traffic, duration_s=3600.0, seed=seed)
    seen: list[tuple[float, str]] = []
    arrived = simulator.tally.arrived

    def counted(t_s: float, direction: Any) -> int:
        seen.append((t_s, direction))
        return arrived(t_s, direction)

    simulator.tally.arrived = counted  # type: ignore[method-assign]
    simulator.run()
    return seen


def test_one_seed_gives_identical_traffic_on_different_stacks() -> None:
    """Common random numbers: the gate's backoff jitter has its own stream, so the same
    seed replays the very same arrivals on caps of 1, 2 and 8 (where retries differ)."""
    traffic = Traffic(numbers=(N1,), aht_s=120.0, rate_per_s=0.02, outbound_fraction=0.5)
    runs = [_arrivals_of(one_number(cap), traffic, seed=7) for cap in (1, 2, 8)]
    assert len(runs[0]) > 50
    assert runs[0] == runs[1] == runs[2]
    assert _arrivals_of(one_number(1), traffic, seed=8) != runs[0]


def test_pure_loss_run_prints_no_negative_zero_wait() -> None:
    """No queue: every admitted caller waited exactly nothing; no wait is negative, and
    nothing prints as -0.0."""
    stack = one_number(2, extra="""
[inbound]
queue_max = 0
""")
    traffic = Traffic(numbers=(N1,), aht_s=60.0, rate_per_s=0.05)
    result = Simulator(stack, traffic, duration_s=3600.0, seed=3).run()
    assert result.counts.rejected > 0 and result.counts.queued == 0
    inbound = result.waits["inbound"]
    assert inbound.n > 50
    assert (inbound.mean, inbound.max) == (0.0, 0.0)
    assert math.copysign(1.0, inbound.mean) == 1.0
    text = json.dumps(to_document(result))
    assert "-0.0" not in text
