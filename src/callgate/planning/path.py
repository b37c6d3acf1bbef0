"""The call's path: every layer one call of a plan needs a slot in, as concurrent calls.

:mod:`callgate.planning.capacity` measures each scope of the stack on its own. A plan
asks a narrower question: for THESE calls (one number's, an account's caller pool, or
the whole stack's), which scopes do they pass through, and how many of them can run at
once in each? An inbound call to ``+14155550100`` needs that number, its trunk
``carrier-east``, its account's plan, a session in every required provider pool and its
units of every resource; an outbound call may leave from any number of its account's
pool, and may use only the plan's cap less ``reserved_inbound``.

Rate windows join the path as the concurrency they can sustain: a window of ``limit``
calls per ``per`` seconds admits ``limit / per`` calls a second, and by Little's Law those
calls keep ``limit / per x AHT`` of them up at once. Where the plan covers several scopes
of a layer (numbers, trunks, accounts) their caps add up; a window counts only when every
one of those scopes has it (a scope without it is not limited by it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from callgate.config import Stack, Window
from callgate.durations import format_duration
from callgate.errors import UnknownAccountError, UnknownNumberError
from callgate.planning.capacity import LayerCapacity, layer_capacities

Direction = Literal["inbound", "outbound"]

_EPS = 1e-9


@dataclass(frozen=True)
class WindowGroup:
    """The windows of one period across the scopes of one layer on the path, summed."""

    owner: str
    """The layer the windows sit on: ``number``, ``trunk``, ``account`` or ``provider``."""
    scope: str
    """``<scope>:<direction>:<period>``, e.g. ``+14155550100:outbound:1h``."""
    period_s: float
    limit: int
    """Admissions per period, summed over the scopes."""
    min_member_limit: int
    """The smallest one scope's limit (what one more number would add, conservatively)."""
    members: int

    @property
    def per_s(self) -> float:
        """The sustained rate the windows admit, in calls per second."""
        return self.limit / self.period_s


@dataclass(frozen=True)
class CallPath:
    """The scopes a plan's calls pass through and the cap of each layer along the way."""

    numbers: tuple[str, ...]
    trunks: tuple[str, ...]
    accounts: tuple[str, ...]
    rows: tuple[LayerCapacity, ...]
    """Concurrency caps in path order: number, trunk, account, providers, resources, windows."""
    windows: tuple[WindowGroup, ...]

    def window(self, scope: str) -> WindowGroup | None:
        """The window group behind a ``window`` row, by its scope."""
        return next((group for group in self.windows if group.scope == scope), None)


def applies(window: Window, direction: Direction) -> bool:
    """True when ``window`` counts calls of ``direction``."""
    return window.direction in ("any", direction)


def _label(names: Sequence[str], kind: str) -> str:
    if len(names) == 1:
        return names[0]
    return " + ".join(names) if len(names) <= 3 else f"{len(names)} {kind}"


def _summed(layer: str, label: str, rows: Sequence[LayerCapacity], what: str) -> LayerCapacity:
    if len(rows) == 1:
        return rows[0]
    return LayerCapacity(layer, label, sum(row.cap for row in rows),
                         f"sum of {len(rows)} {what} caps")


def _members(stack: Stack, direction: Direction, number: str | None,
             account: str | None = None) -> tuple[tuple[str, ...], str]:
    if account is not None:
        if account not in stack.accounts:
            raise UnknownAccountError(
                f"{account!r} is not an account of the stack; its accounts: "
                f"{sorted(stack.accounts)}")
        own = tuple(n for n, spec in stack.numbers.items() if spec.account == account)
        if not own:
            raise UnknownAccountError(f"account {account!r} has no number in the stack: "
                                      f"nothing to plan")
        return own, f"{account}: {len(own)} number{'s' if len(own) != 1 else ''}"
    if number is None:
        return tuple(stack.numbers), f"all {len(stack.numbers)} numbers"
    if number not in stack.numbers:
        raise UnknownNumberError(
            f"{number} is not a number of the stack; its numbers: {sorted(stack.numbers)}")
    if direction == "inbound":
        return (number,), number
    # An outbound call may leave from any caller number of the account's pool.
    account = stack.numbers[number].account
    pool = tuple(n for n, spec in stack.numbers.items() if spec.account == account)
    return pool, f"{account} pool of {len(pool)} numbers"


def _group(owner: str, label: str, members: Mapping[str, Sequence[Window]],
           direction: Direction) -> list[WindowGroup]:
    """One group per period that every member limits (the tightest window per member)."""
    by_period: dict[float, dict[str, tuple[int, str]]] = {}
    for member, windows in members.items():
        for window in windows:
            if applies(window, direction):
                limits = by_period.setdefault(window.per, {})
                tightest = min(window.limit, limits.get(member, (window.limit, ""))[0])
                limits[member] = (tightest, window.direction)
    groups = []
    for period, limits in sorted(by_period.items()):
        if len(limits) != len(members):
            continue
        directions = {way for _, way in limits.values()}
        way = directions.pop() if len(directions) == 1 else direction
        values = [limit for limit, _ in limits.values()]
        groups.append(WindowGroup(owner, f"{label}:{way}:{format_duration(period)}", period,
                                  sum(values), min(values), len(values)))
    return groups


def _window_groups(stack: Stack, numbers: Sequence[str], trunks: Sequence[str],
                   accounts: Sequence[str], direction: Direction) -> list[WindowGroup]:
    trunk_windows: dict[str, Sequence[Window]] = {}
    for name in trunks:
        trunk = stack.trunks[name]
        cps = () if trunk.max_cps is None else (Window(limit=trunk.max_cps, per=1.0),)
        trunk_windows[name] = (*cps, *trunk.windows)
    label = numbers[0] if len(numbers) == 1 else f"{len(numbers)} numbers"
    groups = _group("number", label, {n: stack.numbers[n].windows for n in numbers}, direction)
    groups += _group("trunk", _label(trunks, "trunks"), trunk_windows, direction)
    groups += _group("account", _label(accounts, "accounts"),
                     {a: stack.accounts[a].windows for a in accounts}, direction)
    for name in stack.required_providers():
        groups += _group("provider", name, {name: stack.providers[name].windows}, direction)
    return groups


def window_row(group: WindowGroup, aht_s: float) -> LayerCapacity:
    """A window as the concurrent calls it sustains at ``aht_s`` seconds a call (floored)."""
    sustained = group.per_s * aht_s
    each = group.members > 1 and group.limit == group.members * group.min_member_limit
    limit = f"{group.members} x {group.min_member_limit}" if each else f"{group.limit}"
    note = (f"{group.owner} window: {limit} per {format_duration(group.period_s)} = "
            f"{group.per_s * 3600:g} calls/h; x AHT {format_duration(aht_s)} = "
            f"{sustained:.1f} concurrent")
    return LayerCapacity("window", group.scope, math.floor(sustained + _EPS), note)


def _shared_note(stack: Stack, row: LayerCapacity, account: str) -> LayerCapacity:
    """An account's own path: say which of its layers other accounts draw on too."""
    if row.layer == "trunk":
        others = {spec.account for spec in stack.numbers.values()
                  if spec.trunk in row.scope.split(" + ")} - {account}
    elif row.layer in ("provider", "resource"):
        others = set(stack.accounts) - {account}
    else:
        return row
    if not others:
        return row
    note = f"{row.note}; " if row.note else ""
    return LayerCapacity(row.layer, row.scope, row.cap,
                         f"{note}shared with {', '.join(sorted(others))}")


def call_path(stack: Stack, direction: Direction, number: str | None,
              aht_s: float, account: str | None = None) -> CallPath:
    """The layers the planned calls need, each as a cap in concurrent calls.

    ``number`` None: every number of the stack, each layer summed over its scopes. A
    number, inbound: that number's own path. A number, outbound: its account's pool of
    caller numbers. ``account``: that account's numbers, its plan, and the trunks, pools
    and resources they use (their caps whole, noted as shared when other accounts draw on
    them). Raises :class:`~callgate.errors.UnknownNumberError` for a number the stack
    lacks and :class:`~callgate.errors.UnknownAccountError` for an account it lacks.
    """
    numbers, label = _members(stack, direction, number, account)
    specs = [stack.numbers[n] for n in numbers]
    trunks = tuple(dict.fromkeys(spec.trunk for spec in specs))
    accounts = tuple(dict.fromkeys(spec.account for spec in specs))
    by_scope = {(row.layer, row.scope): row for row in layer_capacities(stack)}
    account_rows = []
    for name in accounts:
        row = by_scope["account", name]
        reserved = stack.accounts[name].reserved_inbound
        if direction == "outbound" and reserved:
            row = LayerCapacity("account", name, row.cap - reserved,
                                f"{row.note}; outbound may use plan - reserved")
        account_rows.append(row)
    rows = [
        _summed("number", label, [by_scope["number", n] for n in numbers], "per-number"),
        _summed("trunk", _label(trunks, "trunks"), [by_scope["trunk", t] for t in trunks],
                "trunk"),
        _summed("account", _label(accounts, "accounts"), account_rows, "account plan"),
    ]
    rows += [by_scope["provider", name] for name in stack.required_providers()]
    rows += [by_scope["resource", name] for name in stack.resources]
    windows = _window_groups(stack, numbers, trunks, accounts, direction)
    rows += [window_row(group, aht_s) for group in windows]
    if account is not None:
        rows = [_shared_note(stack, row, account) for row in rows]
    return CallPath(numbers, trunks, accounts, tuple(rows), tuple(windows))
