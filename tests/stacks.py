"""The smallest stack a service test needs, written once: one account on one trunk, one number."""

from __future__ import annotations

N1 = "+14155550100"


def one_number(max_concurrent: int = 5, *, gate: str = "", extra: str = "") -> str:
    """Account ``acme`` (plan cap 10) on trunk ``t`` (cap 10) with number :data:`N1` at
    ``max_concurrent``; ``gate`` goes in ``[gate]``, ``extra`` (more tables) at the end."""
    head = f"[gate]\n{gate}\n" if gate else ""
    return f"""{head}
[trunks.t]
max_concurrent = 10

[plans.basic]
max_concurrent = 10

[accounts.acme]
plan = "basic"

[numbers."{N1}"]
account = "acme"
trunk = "t"
max_concurrent = {max_concurrent}
{extra}"""
