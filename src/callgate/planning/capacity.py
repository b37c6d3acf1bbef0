"""Effective capacity: how many calls each layer of a stack lets run at once.

A call passes through every layer in turn, like water through pipes of different
widths joined end to end: a trunk of 40 channels, numbers of 4 lines each, an account
plan of 25, a provider pool of 3 keys x 10 sessions capped at 25 by the organisation.
However wide the other pipes are, the narrowest one sets the flow. This module measures
each pipe (per scope, and summed per layer across the stack) and names the narrowest.

Every ``cap`` here is a number of concurrent calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from callgate.config import Provider, Resource, Stack


@dataclass(frozen=True)
class LayerCapacity:
    """The most calls (concurrent) one scope, or one whole layer, lets run at once."""

    layer: str
    scope: str
    cap: int
    note: str


def pool_capacity(pool: Provider) -> int:
    """Concurrent sessions of a provider pool: keys x sessions per key, within its pool cap."""
    total = len(pool.keys) * pool.sessions_per_key
    return total if pool.max_sessions is None else min(total, pool.max_sessions)


def resource_calls(resource: Resource) -> int:
    """Concurrent calls a resource carries: its units // the units each call takes."""
    return resource.capacity // resource.per_call


def _pool_note(pool: Provider) -> str:
    """``"3 keys x 10 = 30, pool cap 25"``."""
    keys = f"{len(pool.keys)} key{'s' if len(pool.keys) != 1 else ''}"
    note = f"{keys} x {pool.sessions_per_key} = {len(pool.keys) * pool.sessions_per_key}"
    if pool.max_sessions is not None:
        note += f", pool cap {pool.max_sessions}"
    return note


def layer_capacities(stack: Stack) -> list[LayerCapacity]:
    """Every scope's cap in concurrent calls: trunks, numbers, accounts, pools, resources."""
    rows: list[LayerCapacity] = []
    for name, trunk in stack.trunks.items():
        note = f"max {trunk.max_cps} calls/s" if trunk.max_cps is not None else ""
        rows.append(LayerCapacity("trunk", name, trunk.max_concurrent, note))
    for number, spec in stack.numbers.items():
        rows.append(LayerCapacity("number", number, spec.max_concurrent,
                                  f"account {spec.account}, trunk {spec.trunk}"))
    for name, account in stack.accounts.items():
        note = f"plan {account.plan}"
        if account.reserved_inbound:
            note += f", {account.reserved_inbound} reserved for inbound"
        rows.append(LayerCapacity("account", name, stack.plans[account.plan].max_concurrent,
                                  note))
    for name, pool in stack.providers.items():
        note = _pool_note(pool)
        if not pool.required:
            note += " (optional: only calls that ask for it)"
        rows.append(LayerCapacity("provider", name, pool_capacity(pool), note))
    for name, resource in stack.resources.items():
        rows.append(LayerCapacity("resource", name, resource_calls(resource),
                                  f"{resource.capacity} units / {resource.per_call} per call"))
    return rows


def effective_capacity(stack: Stack) -> list[LayerCapacity]:
    """Per layer, the most concurrent calls it lets run across the whole stack.

    One row for each of numbers (sum of their caps), trunks (sum), accounts (sum of plan
    caps), then one row per required provider pool and per resource, since every call
    needs each of those.
    """
    numbers = stack.numbers.values()
    plans = [stack.plans[account.plan].max_concurrent for account in stack.accounts.values()]
    rows = [
        LayerCapacity("trunk", f"{len(stack.trunks)} trunk(s)",
                      sum(t.max_concurrent for t in stack.trunks.values()),
                      "sum of trunk caps"),
        LayerCapacity("number", f"{len(stack.numbers)} number(s)",
                      sum(n.max_concurrent for n in numbers), "sum of per-number caps"),
        LayerCapacity("account", f"{len(stack.accounts)} account(s)", sum(plans),
                      "sum of plan caps"),
    ]
    for name in stack.required_providers():
        pool = stack.providers[name]
        rows.append(LayerCapacity("provider", name, pool_capacity(pool),
                                  f"{_pool_note(pool)}; every call needs one session"))
    for name, resource in stack.resources.items():
        rows.append(LayerCapacity("resource", name, resource_calls(resource),
                                  f"{resource.capacity} units / {resource.per_call} per call"))
    return rows


def bottleneck(stack: Stack) -> LayerCapacity:
    """The layer with the lowest effective capacity (ties: the first, in the order above)."""
    return min(effective_capacity(stack), key=lambda row: row.cap)
