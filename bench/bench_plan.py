"""Planner speed: Erlang B's inverse at 100,000 erlangs, and a whole ``plan`` of the example.

Run it as ``python bench/bench_plan.py``. The baseline, timed in the same run, is a plain
Python loop summing 10**6 floats; each figure is printed with its ratio to it, so the
numbers compare across machines. Rounds are interleaved (baseline, Erlang B, plan, ...)
and each side keeps its best round, which is what a noisy shared machine allows.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 5
BASELINE_N = 1_000_000


def baseline() -> float:
    """A plain Python loop summing 10**6 floats."""
    total = 0.0
    for value in range(BASELINE_N):
        total += value * 0.5
    return total


def erlang_b_inverse() -> int:
    """Lines for 1% blocking of 100,000 erlangs."""
    from callgate.planning.erlang import lines_for_blocking

    return lines_for_blocking(100_000, 0.01)


def example_plan() -> Callable[[], object]:
    """A full plan of examples/stack.toml with the business-hours profile (3 min AHT)."""
    from callgate.config import load_stack
    from callgate.planning.plan import Volume, plan
    from callgate.planning.traffic_profile import load_profile

    stack = load_stack(ROOT / "examples" / "stack.toml")
    volume = Volume(profile=load_profile(ROOT / "examples" / "profile-business-hours.toml"))
    return lambda: plan(stack, volume, 180.0)


def best_of(rounds: int, cases: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Each case's fastest round, the cases interleaved round by round."""
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, case in cases.items():
            start = time.perf_counter()
            case()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    cases: dict[str, Callable[[], object]] = {
        "baseline: sum 10**6 floats": baseline,
        "lines_for_blocking(100000, 0.01)": erlang_b_inverse,
        "plan(example stack, business-hours profile)": example_plan(),
    }
    for case in cases.values():  # warm up imports and caches
        case()
    best = best_of(ROUNDS, cases)
    base = best["baseline: sum 10**6 floats"]
    print(f"{platform.python_implementation()} {platform.python_version()} on "
          f"{platform.machine()}, {platform.processor() or platform.system()}; "
          f"best of {ROUNDS} interleaved rounds")
    print(f"{'case':<46} {'time':>11} {'x baseline':>11}")
    for name, seconds in best.items():
        print(f"{name:<46} {seconds * 1000:>8.2f} ms {seconds / base:>11.3f}")


if __name__ == "__main__":
    main()
