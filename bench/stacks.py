"""The stacks the benchmarks run on, all derived from ``examples/stack.toml``.

The gate benchmarks use the example stack unchanged and move a fake clock forward
between calls, so its rate windows are exercised but never fill. Benchmarks on the
system clock (HTTP) or that hold many leases at once (memory) need room the example
does not have; :func:`roomy_stack` keeps every layer of the example and raises its caps.
"""

from __future__ import annotations

import json
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
    return parse_stack(roomy_raw(cap, max_cps, lease_ttl),
                       source=f"{EXAMPLE} (caps raised to {cap})")


def roomy_toml(cap: int, max_cps: int, lease_ttl: str = "30s") -> str:
    """:func:`roomy_stack` as a stack file's text (for ``callgate serve --config``)."""
    raw = roomy_raw(cap, max_cps, lease_ttl)
    text = "\n".join(_toml_tables(raw, ()))
    if tomllib.loads(text) != raw:  # the writer below knows only what the example uses
        raise ValueError("roomy_toml: the stack file does not read back as the stack")
    return text


def _toml_tables(table: dict[str, Any], path: tuple[str, ...]) -> list[str]:
    """``table`` as TOML lines: scalars and lists of scalars, then its sub-tables."""
    lines = [f"[{'.'.join(json.dumps(k) for k in path)}]"] if path else []
    lines += [f"{json.dumps(key)} = {_toml_value(value)}" for key, value in table.items()
              if not isinstance(value, dict)]
    for key, value in table.items():
        if isinstance(value, dict):
            lines += ["", *_toml_tables(value, (*path, key))]
    return lines


def _toml_value(value: Any) -> str:
    """A TOML value: JSON's spelling of strings, numbers and booleans is TOML's too."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def roomy_raw(cap: int, max_cps: int, lease_ttl: str) -> dict[str, Any]:
    """The example stack's TOML document with :func:`roomy_stack`'s caps."""
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
    return raw


def trunk_lines(stack: Stack) -> tuple[list[str], float]:
    """Inbound lines sharing the first number's trunk, and a clock step (s) per call that
    keeps that trunk's tightest 1-second window one call short of full."""
    first = next(iter(stack.numbers.values()))
    lines = [n for n, spec in stack.numbers.items()
             if spec.trunk == first.trunk and spec.account == first.account]
    cps = stack.trunks[first.trunk].max_cps
    step = 1.0 / (cps - 1) if cps and cps > 1 else 1.0
    return lines, step
