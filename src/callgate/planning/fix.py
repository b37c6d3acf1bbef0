"""The cheapest fix: every layer below the requirement, raised in its cheapest way.

Each layer on the call's path whose cap is below the requirement must be raised; the
ways and their monthly prices come from the stack's ``[costs]`` table and plan prices:
more numbers, trunk channels, provider sessions (a new key or a quota increase), resource
units, or the cheapest plan that fits. One purchase of numbers can lift several layers
(the number caps and the per-number windows together).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from callgate.config import Stack
from callgate.durations import format_duration
from callgate.planning.capacity import LayerCapacity
from callgate.planning.path import CallPath, Direction

_EPS = 1e-9

@dataclass(frozen=True)
class Change:
    """One layer's cheapest way up to the requirement; ``monthly_cost`` None if unpriced."""

    layer: str
    scope: str
    gap: int
    action: str
    monthly_cost: float | None
    note: str = ""


@dataclass(frozen=True)
class Fix:
    """Every layer below the requirement, raised in its cheapest way (cheapest first)."""

    changes: tuple[Change, ...]
    total_monthly_cost: float
    """Sum over the priced changes."""

    @property
    def complete(self) -> bool:
        """True when every change has a price."""
        return all(change.monthly_cost is not None for change in self.changes)

    @property
    def unpriced(self) -> tuple[Change, ...]:
        """Changes with no price in ``[costs]`` (or no plan that reaches the requirement)."""
        return tuple(c for c in self.changes if c.monthly_cost is None)




def money(amount: float | None) -> float | None:
    """A monthly price to the cent (so that 11 x 1.15 reads 12.65)."""
    return None if amount is None else round(amount, 2)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


_Step = tuple[int, float, tuple[str, ...]]  # (cap sum, cost, plan moves)


def _plan_change(stack: Stack, row: LayerCapacity, accounts: Sequence[str], requirement: int,
                 direction: Direction) -> Change:
    """The cheapest plans for the path's accounts whose caps together reach the requirement.

    Each account keeps its plan or moves to a priced bigger one; a Pareto front of (cap sum,
    cost) over the accounts finds the cheapest mix (one account: the cheapest plan that fits).
    """
    front: list[_Step] = [(0, 0.0, ())]
    for name in accounts:
        account = stack.accounts[name]
        reserved = account.reserved_inbound if direction == "outbound" else 0
        current = stack.plans[account.plan]
        options: list[_Step] = [(current.max_concurrent - reserved, 0.0, ())]
        if current.price is not None:
            options += [(plan.max_concurrent - reserved, plan.price - current.price,
                         (f"{name}: plan {account.plan} -> {plan_name}",))
                        for plan_name, plan in stack.plans.items()
                        if plan.price is not None and plan.max_concurrent > current.max_concurrent]
        merged = sorted(((min(total + cap, requirement), cost + extra, steps + step)
                         for total, cost, steps in front for cap, extra, step in options),
                        key=lambda item: (-item[0], item[1]))
        front = []
        for item in merged:  # keep a state only if it is cheaper than every bigger one
            if not front or item[1] < front[-1][1]:
                front.append(item)
    gap = requirement - row.cap
    if front[0][0] < requirement:
        return Change("account", row.scope, gap, "no priced plan reaches the requirement", None,
                      "no price in [plans] for a plan big enough: ask the platform")
    cost, steps = front[0][1], front[0][2]
    return Change("account", row.scope, gap, "; ".join(steps), money(cost),
                  "plan price difference")


def _provider_change(stack: Stack, row: LayerCapacity, requirement: int) -> Change:
    """More sessions for a pool: whole keys when the keys fall short, a quota increase when
    the pool cap does. The price is per session *bought*: a key of 40 sessions costs 40
    sessions even when the gap is 35; a quota increase over sessions the keys already
    have costs the sessions it lifts."""
    pool = stack.providers[row.scope]
    gap = requirement - row.cap
    price = stack.costs.provider_session.get(row.scope)
    keys_total = len(pool.keys) * pool.sessions_per_key
    parts = []
    more = 0
    if keys_total < requirement:
        more = math.ceil((requirement - keys_total) / pool.sessions_per_key)
        parts.append(f"add {_plural(more, 'key')} of {pool.sessions_per_key} sessions")
    if pool.max_sessions is not None and pool.max_sessions < requirement:
        parts.append(f"ask {row.scope} for a quota increase (pool cap "
                     f"{pool.max_sessions} -> {requirement})")
    # Sessions bought: every session of the new keys, plus those a quota increase lifts
    # on the keys already there (a key is bought whole, so it may overshoot).
    bought = more * pool.sessions_per_key + max(0, min(keys_total, requirement) - row.cap)
    spare = keys_total + more * pool.sessions_per_key - requirement if more else 0
    action = f"+{bought} sessions: " + " and ".join(parts)
    if spare > 0:
        action += f" ({spare} above the requirement)"
    note = "" if price is not None else "no price in [costs] provider_session"
    return Change("provider", row.scope, gap, action,
                  money(None if price is None else bought * price), note)


def _number_changes(needs: Sequence[tuple[LayerCapacity, int, str]], requirement: int,
                    price: float | None) -> list[Change]:
    """One purchase of numbers for every number-bound layer: the same numbers raise them all."""
    most = max(count for _, count, _ in needs)
    buyer = next(row for row, count, _ in needs if count == most)
    bought = f"+{_plural(most, 'number')}"
    note = next(basis for row, _, basis in needs if row is buyer)
    if price is None:
        note += "; no price in [costs] number"
    changes = [Change(buyer.layer, buyer.scope, requirement - buyer.cap, bought,
                      money(None if price is None else most * price), note)]
    changes += [Change(row.layer, row.scope, requirement - row.cap,
                       f"covered by the {bought} for {buyer.layer} {buyer.scope}",
                       None if price is None else 0.0, basis)
                for row, _, basis in needs if row is not buyer]
    return changes


def _priced(layer: str, scope: str, gap: int, action: str, units: int, price: float | None,
            key: str) -> Change:
    return Change(layer, scope, gap, action, money(None if price is None else units * price),
                  "" if price is not None else f"no price in [costs] {key}")


def cheapest_fix(stack: Stack, path: CallPath, requirement: int, aht_s: float,
         direction: Direction) -> Fix:
    changes: list[Change] = []
    number_needs: list[tuple[LayerCapacity, int, str]] = []
    costs = stack.costs
    for row in path.rows:
        gap = requirement - row.cap
        if gap <= 0:
            continue
        group = path.window(row.scope) if row.layer == "window" else None
        if row.layer == "number":
            per = min(stack.numbers[n].max_concurrent for n in path.numbers)
            count = math.ceil(gap / per)
            number_needs.append((row, count, f"at {per} concurrent per number"))
        elif group is not None and group.owner == "number":
            # The row's cap is floored; count numbers on the exact sustained rates.
            per_number = group.min_member_limit / group.period_s * aht_s
            count = max(1, math.ceil((requirement - group.per_s * aht_s) / per_number - _EPS))
            number_needs.append((row, count, f"at {group.min_member_limit} per "
                                 f"{format_duration(group.period_s)} per number"))
        elif group is not None:
            who = {"trunk": "the carrier", "account": "the platform"}.get(group.owner,
                                                                          "the provider")
            changes.append(Change("window", row.scope, gap, f"ask {who} to raise this limit",
                                  None, "no price in [costs]"))
        elif row.layer == "trunk":
            changes.append(_priced("trunk", row.scope, gap, f"+{gap} trunk channels", gap,
                                   costs.trunk_channel, "trunk_channel"))
        elif row.layer == "account":
            changes.append(_plan_change(stack, row, path.accounts, requirement, direction))
        elif row.layer == "provider":
            changes.append(_provider_change(stack, row, requirement))
        elif row.layer == "resource":
            units = gap * stack.resources[row.scope].per_call
            changes.append(_priced("resource", row.scope, gap, f"+{units} {row.scope} units",
                                   units, costs.resource_unit.get(row.scope), "resource_unit"))
    # Cheapest first, unpriced last; the numbers bought once stay together, buyer first.
    blocks = [[change] for change in changes]
    if number_needs:
        blocks.append(_number_changes(number_needs, requirement, costs.number))
    blocks.sort(key=lambda block: (block[0].monthly_cost is None, block[0].monthly_cost or 0.0))
    ordered = [change for block in blocks for change in block]
    total = math.fsum(c.monthly_cost for c in ordered if c.monthly_cost is not None)
    return Fix(tuple(ordered), round(total, 2))
