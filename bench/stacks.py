"""The stacks the benchmarks run on, all derived from ``examples/stack.toml``.

The gate benchmarks use the example stack unchanged and move a fake clock forward
between calls, so its rate windows are exercised but never fill. Benchmarks on the
system clock (HTTP) or that hold many leases at once (memory) need room the example
does not have; :func:`roomy_stack` keeps every layer of the example and raises its caps.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from callgate.config import Stack, parse_stack

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "stack.toml"


def example_raw() -> dict[str, Any]:
    with EXAMPLE.open("rb") as file:
        return tomllib.load(file)


def example_stack() -> Stack:
    return parse_stack(example_raw(), source=str(EXAMPLE))


def roomy_stack(cap: int, max_cps: int, lease_ttl: str = "30s") -> Stack:
    """The example's layers with every concurrency cap set to ``cap`` and trunk CPS ``max_cps``.

    Windows are kept (trunk CPS windows stay on, only higher); lease TTL and the maximum
    call duration become ``lease_ttl``.
    """
    raw = example_raw()
    raw["gate"]["lease_ttl"] = lease_ttl
    raw["gate"]["max_call_duration"] = lease_ttl
    for trunk in raw["trunks"].values():
        trunk["max_concurrent"] = cap
        if "max_cps" in trunk:
            trunk["max_cps"] = max_cps
    for plan in raw["plans"].values():
        plan["max_concurrent"] = cap
    raw["number_defaults"]["max_concurrent"] = cap
    for number in raw["numbers"].values():
        if "max_concurrent" in number:
            number["max_concurrent"] = cap
    for pool in raw["providers"].values():
        pool["sessions_per_key"] = cap
        if "max_sessions" in pool:
            pool["max_sessions"] = cap
    for resource in raw["resources"].values():
        resource["capacity"] = cap * resource.get("per_call", 1)
    return parse_stack(raw, source=f"{EXAMPLE} (caps raised to {cap})")


def trunk_lines(stack: Stack) -> tuple[list[str], float]:
    """Inbound lines sharing the first number's trunk, and a clock step (s) per call that
    keeps that trunk's tightest 1-second window one call short of full."""
    first = next(iter(stack.numbers.values()))
    lines = [n for n, spec in stack.numbers.items()
             if spec.trunk == first.trunk and spec.account == first.account]
    cps = stack.trunks[first.trunk].max_cps
    step = 1.0 / (cps - 1) if cps and cps > 1 else 1.0
    return lines, step
