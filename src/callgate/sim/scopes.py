"""Which capped scopes one lease holds, from the stack or from the usage document.

Both testers judge caps with their own record of the leases they held, never with the
gate's word for it. For that they need, per lease, every scope it counts in: its trunk,
number and account, each resource (``per_call`` units), and for each provider pool the
pool and the key the gate chose (``lease.keys``). With the stack this is exact; from the
usage document's layer list alone (a load test without ``--config``) the trunk is known
only when there is one, and resources only when the usage document lists them (taken as
one unit a call).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from callgate.config import Stack
from callgate.gate import Gate

Held = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class ScopeMap:
    """Caps of every capped scope, and what a call on each number holds besides its keys."""

    caps: Mapping[str, int]
    base: Mapping[str, Held]  # number -> its trunk, number, account and resource slots
    accounts: Mapping[str, str]  # number -> account (when known)
    exact: bool  # False: derived from a usage document, some scopes may be missing

    @classmethod
    def of_stack(cls, stack: Stack) -> ScopeMap:
        base: dict[str, Held] = {}
        resources = tuple((f"resource:{name}", r.per_call) for name, r in stack.resources.items())
        for number, spec in stack.numbers.items():
            base[number] = ((f"trunk:{spec.trunk}", 1), (f"number:{number}", 1),
                            (f"account:{spec.account}", 1), *resources)
        return cls(dict(Gate.limits_for(stack).caps), base,
                   {n: s.account for n, s in stack.numbers.items()}, True)

    @classmethod
    def of_usage(cls, layers: Iterable[Mapping[str, object]]) -> ScopeMap:
        """From the ``layers`` of a usage document (``layer``, ``scope``, ``cap``)."""
        caps: dict[str, int] = {}
        for row in layers:
            layer, scope, cap = row.get("layer"), row.get("scope"), row.get("cap")
            if isinstance(layer, str) and isinstance(scope, str) and isinstance(cap, int):
                caps[f"{layer}:{scope}"] = cap
        trunks = [k for k in caps if k.startswith("trunk:")]
        resources = tuple((k, 1) for k in caps if k.startswith("resource:"))
        shared = (trunks[0], 1) if len(trunks) == 1 else None
        base = {}
        for key in caps:
            if key.startswith("number:"):
                number = key.partition(":")[2]
                base[number] = ((*((shared,) if shared else ()), (key, 1), *resources))
        return cls(caps, base, {}, False)

    @property
    def numbers(self) -> tuple[str, ...]:
        return tuple(self.base)

    def held(self, number: str, keys: Mapping[str, str], account: str | None = None) -> Held:
        """Every capped scope a lease on ``number`` with provider ``keys`` holds."""
        items = list(self.base.get(number, ()))
        if not self.exact and account is not None:
            items.append((f"account:{account}", 1))
        for provider, alias in keys.items():
            items.append((f"provider:{provider}", 1))
            items.append((f"provider:{provider}:{alias}", 1))
        return tuple((key, units) for key, units in items if key in self.caps)
