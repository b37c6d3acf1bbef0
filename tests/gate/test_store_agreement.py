"""Differences between the stores found by the differential test, kept as named examples.

Each ran differently on memory, SQLite or Redis before its fix; each runs on every store.
The ordering rules themselves are pinned in ``test_ordering.py``.
"""

from __future__ import annotations

from tests.conftest import GateFactory, stack_from
from tests.gate.stacks import BASE, N1, N2

from callgate.model import Call, Outcome, Reason, RenewStatus

TWO_ACCOUNTS = BASE.replace('[accounts.acme]\nplan = "small"', """[accounts.acme]
plan = "small"

[accounts.beta]
plan = "small\"""").replace('[numbers."+15550000002"]\naccount = "acme"',
                            '[numbers."+15550000002"]\naccount = "beta"')


def usage_of(gate_usage: dict[str, object], layer: str, scope: str) -> int:
    for row in gate_usage["layers"]:  # type: ignore[attr-defined]
        if row["layer"] == layer and row["scope"] == scope:
            return int(row["in_use"])
    raise KeyError((layer, scope))


def test_release_without_account_frees_the_live_lease_not_an_ended_namesake(
        make_gate: GateFactory) -> None:
    """acme's call x has ended, beta's x is live: DELETE /v1/calls/x without an account
    frees beta's slot (Redis found acme's ended record and freed nothing)."""
    gate, _ = make_gate(TWO_ACCOUNTS)
    assert gate.acquire(Call("x", "inbound", N1)).outcome is Outcome.ADMITTED
    assert gate.release("x", account="acme").released  # kept for ended_ttl
    assert gate.acquire(Call("x", "inbound", N2)).lease.account == "beta"  # type: ignore[union-attr]
    result = gate.release("x")
    assert result.released
    assert usage_of(gate.usage(), "account", "beta") == 0
    assert gate.acquire(Call("x", "inbound", N2)).reason is Reason.CALL_ENDED


def test_renew_without_account_renews_the_live_lease_not_an_ended_namesake(
        make_gate: GateFactory) -> None:
    """The same case for renew: beta's live lease is renewed, not reported ended."""
    gate, clock = make_gate(TWO_ACCOUNTS)
    gate.acquire(Call("x", "inbound", N1))
    gate.release("x", account="acme")
    gate.acquire(Call("x", "inbound", N2))
    clock.advance(10)
    renewed = gate.renew("x")
    assert renewed.status is RenewStatus.RENEWED and renewed.lease is not None
    assert (renewed.lease.account, renewed.lease.expires_at) == ("beta", clock.now + 30)


def test_a_lease_renewed_twice_at_one_instant_expires_once(make_gate: GateFactory) -> None:
    """Two renewals at one instant, then expiry: one lease expired, counted once (memory
    counted it twice)."""
    gate, clock = make_gate(BASE)
    gate.acquire(Call("a", "inbound", N1))
    clock.advance(0.25)
    assert gate.renew("a").status is RenewStatus.RENEWED
    assert gate.renew("a").status is RenewStatus.RENEWED
    clock.advance(30)
    usage = gate.usage()
    assert (usage["expired_total"], usage["leases"]) == (1, 0)
    assert usage_of(usage, "number", N1) == 0


def test_an_ended_call_is_forgotten_exactly_at_its_until(make_gate: GateFactory) -> None:
    """At ended_ttl after its end, a call id is unknown, even where the store purges
    lazily (SQLite, between purges, still answered 'ended')."""
    gate, clock = make_gate(BASE.replace('tombstone_ttl = "60s"',
                                         'tombstone_ttl = "60s"\nended_ttl = "40s"'))
    gate.acquire(Call("a", "inbound", N1))
    gate.release("a")
    clock.advance(39.5)
    gate.expire()  # a step just before: SQLite purges at most once a second
    clock.advance(0.5)
    assert gate.renew("a").status is RenewStatus.UNKNOWN
    assert not gate.release("a").released
    assert gate.acquire(Call("a", "inbound", N1)).reason is Reason.ADMITTED


def test_a_final_rejection_replaces_a_tombstone_past_its_time(make_gate: GateFactory) -> None:
    """A call id whose old end is past its until gets its max_attempts rejection kept, and
    the rejection replays even once there is room."""
    gate, clock = make_gate(BASE.replace('tombstone_ttl = "60s"',
                                         'tombstone_ttl = "60s"\nended_ttl = "40s"'))
    gate.acquire(Call("o", "outbound", N2))
    gate.release("o")
    gate.acquire(Call("b1", "outbound", N1))
    gate.acquire(Call("b2", "outbound", N1))
    for step in (20, 19.5):
        clock.advance(step)
        assert gate.renew("b1").status is RenewStatus.RENEWED
        assert gate.renew("b2").status is RenewStatus.RENEWED
    clock.advance(0.5)  # o's end is past its until; N1 is full
    last = gate.acquire(Call("o", "outbound", N1, attempt=3))
    assert (last.outcome, last.reason) == (Outcome.REJECTED, Reason.MAX_ATTEMPTS)
    gate.release("b1")
    again = gate.acquire(Call("o", "outbound", N1, attempt=3))
    assert (again.outcome, again.reason) == (Outcome.REJECTED, Reason.MAX_ATTEMPTS)


def test_a_promotion_after_a_reload_logs_only_the_windows_the_stack_still_has(
        make_gate: GateFactory) -> None:
    """A caller queued under a window that a reload removed is promoted without counting in
    it, so the window starts empty when it comes back (memory and Redis counted it)."""
    windowed = BASE.replace('max_concurrent = 2\n\n[numbers."+15550000002"]',
                            'max_concurrent = 2\nwindows = [{direction = "inbound", limit = 5, '
                            'per = "1h"}]\n\n[numbers."+15550000002"]')
    gate, _ = make_gate(windowed)
    gate.acquire(Call("c1", "inbound", N1))
    gate.acquire(Call("c2", "inbound", N1))
    assert gate.acquire(Call("q", "inbound", N1)).outcome is Outcome.QUEUED
    gate.reload(stack_from(BASE))
    assert gate.release("c1").released  # q is promoted under the window-less stack
    assert gate.acquire(Call("q", "inbound", N1)).reason is Reason.PROMOTED
    gate.reload(stack_from(windowed))
    assert [w["count"] for w in gate.usage()["windows"]] == [2]
