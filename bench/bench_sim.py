"""Simulator speed: a simulated hour at 1,000 concurrent calls, against a bare event loop.

Run it as ``python bench/bench_sim.py`` (``--day`` also times a whole simulated day,
``--rounds N`` for more rounds). The stack has 100 numbers on two trunks, one account
capped at 1,150, two provider pools and a db pool; calls arrive at 1,000 / 180 per second
(3-minute exponential handle times, so about 1,000 concurrent), 10% outbound, callers
on hold for at most a minute on average. Every call is decided by the real gate on a
memory store; healthy calls renew once per 30 s TTL.

The baseline, timed in the same run and interleaved round by round, is a bare ``heapq``
event loop popping as many events as the simulation did, each handler pushing the
next event at an exponential time: what an event costs with no gate, no bookkeeping.
The figures are events and gate decisions per wall second, their ratio to the
baseline, and the wall time of a simulated hour (times 24 for the day).
"""

from __future__ import annotations

import argparse
import heapq
import platform
import random
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from callgate.config import Stack, parse_stack  # noqa: E402 (after the path setup)
from callgate.sim.results import RunResult  # noqa: E402
from callgate.sim.simulate import Simulator  # noqa: E402
from callgate.sim.traffic import Traffic  # noqa: E402

NUMBERS = tuple(f"+1555100{i:04d}" for i in range(100))
CONCURRENT = 1000
AHT_S = 180.0


def stack() -> Stack:
    """Room for about 1,150 calls: the account is the cap that bites at the peaks."""
    numbers = "".join(
        f'[numbers."{n}"]\naccount = "acme"\ntrunk = "{"east" if i % 2 else "west"}"\n'
        f"max_concurrent = 20\n" for i, n in enumerate(NUMBERS))
    return parse_stack(tomllib.loads(f"""
[gate]
lease_ttl = "30s"

[trunks.east]
max_concurrent = 700
max_cps = 50

[trunks.west]
max_concurrent = 700
max_cps = 50

[plans.big]
max_concurrent = 1150

[accounts.acme]
plan = "big"

[providers.openai]
keys = ["a", "b", "c"]
sessions_per_key = 400
max_sessions = 1150

[providers.stt]
keys = ["s"]
sessions_per_key = 1200

[resources.db]
capacity = 1200

[inbound]
queue_max = 20
max_wait = "2m"
{numbers}"""))


def simulate(hours: float, seed: int = 1) -> RunResult:
    traffic = Traffic(numbers=NUMBERS, aht_s=AHT_S, rate_per_s=CONCURRENT / AHT_S,
                      patience_s=60.0, outbound_fraction=0.1)
    return Simulator(stack(), traffic, duration_s=hours * 3600.0, seed=seed).run()


def bare_loop(events: int, seed: int = 1) -> float:
    """Seconds to pop ``events`` events from a heap whose handlers each push the next."""
    rng = random.Random(seed)
    heap: list[tuple[float, int, int, object]] = []
    for seq in range(CONCURRENT):
        heapq.heappush(heap, (rng.expovariate(1.0), seq % 9, seq, None))
    seq = CONCURRENT
    started = time.perf_counter()
    for _ in range(events):
        t, kind, _, item = heapq.heappop(heap)
        seq += 1
        heapq.heappush(heap, (t + rng.expovariate(1.0), kind, seq, item))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--day", action="store_true", help="also time a whole simulated day")
    args = parser.parse_args()
    best_sim: RunResult | None = None
    best_sim_s = best_base_s = float("inf")
    for _ in range(args.rounds):  # interleaved: simulator, baseline, simulator, ...
        result = simulate(1.0)
        if result.perf["wall_s"] < best_sim_s:
            best_sim, best_sim_s = result, result.perf["wall_s"]
        best_base_s = min(best_base_s, bare_loop(int(result.perf["events"])))
    assert best_sim is not None
    events, decisions = best_sim.perf["events"], best_sim.perf["decisions"]
    account = next(row for row in best_sim.scopes if row.key == "account:acme")
    print(f"{platform.python_implementation()} {platform.python_version()} on "
          f"{platform.machine()}, {platform.processor() or platform.system()}; "
          f"best of {args.rounds} interleaved rounds")
    print(f"one simulated hour at {CONCURRENT:,} concurrent calls (AHT {AHT_S:.0f} s): "
          f"{best_sim.counts.arrivals:,} calls, {events:,.0f} events, {decisions:,.0f} gate "
          f"decisions; account peak {account.peak} (mean {account.mean:,.0f}) of cap "
          f"{account.cap}")
    print(f"{'case':<34} {'events/s':>12} {'decisions/s':>12} {'x baseline':>11}")
    print(f"{'baseline: bare heapq event loop':<34} {events / best_base_s:>12,.0f} "
          f"{'-':>12} {1.0:>11.3f}")
    print(f"{'simulator (real gate, memory)':<34} {events / best_sim_s:>12,.0f} "
          f"{decisions / best_sim_s:>12,.0f} {best_base_s / best_sim_s:>11.3f}")
    print(f"wall time per simulated hour: {best_sim_s:.2f} s; a simulated day: about "
          f"{24 * best_sim_s:.0f} s (target: under 300 s)")
    if args.day:
        day = simulate(24.0)
        print(f"a whole simulated day, timed: {day.perf['wall_s']:.1f} s "
              f"({day.counts.arrivals:,} calls, {day.perf['events']:,.0f} events)")


if __name__ == "__main__":
    main()
