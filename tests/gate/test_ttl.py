"""The TTL rules of a lease, on every store: explicit wins, outbound rings on dial_ttl, caps."""

from __future__ import annotations

from tests.conftest import GateFactory
from tests.gate.stacks import BASE, N1

from callgate.model import Call, Outcome, RenewStatus


def test_an_outbound_lease_first_lives_dial_ttl_then_lease_ttl(make_gate: GateFactory) -> None:
    """An outbound lease outlives lease_ttl while it rings; its first renew sets lease_ttl."""
    gate, clock = make_gate(BASE)
    decision = gate.acquire(Call("out", "outbound", N1))
    assert decision.outcome is Outcome.ADMITTED and decision.lease is not None
    assert decision.lease.expires_at == clock.now + 90  # the default dial_ttl
    assert decision.lease.ttl_s == 30  # what a renew applies
    clock.advance(60)  # ringing, past lease_ttl
    renewed = gate.renew("out")
    assert renewed.status is RenewStatus.RENEWED and renewed.lease is not None
    assert renewed.lease.expires_at == clock.now + 30


def test_an_outbound_call_ringing_past_dial_ttl_has_expired(make_gate: GateFactory) -> None:
    """Past dial_ttl with no renew the lease is gone: a renew answers expired."""
    gate, clock = make_gate(BASE)
    gate.acquire(Call("out", "outbound", N1))
    clock.advance(90.5)
    assert gate.renew("out").status is RenewStatus.EXPIRED


def test_an_explicit_ttl_wins_in_both_directions(make_gate: GateFactory) -> None:
    """ttl_s on acquire sets the first expiry and the renew TTL, inbound and outbound."""
    gate, clock = make_gate(BASE)
    out = gate.acquire(Call("out", "outbound", N1), ttl_s=10)
    inbound = gate.acquire(Call("in", "inbound", N1), ttl_s=600)
    assert out.lease is not None and inbound.lease is not None
    assert (out.lease.expires_at, out.lease.ttl_s) == (clock.now + 10, 10)
    assert (inbound.lease.expires_at, inbound.lease.ttl_s) == (clock.now + 600, 600)


def test_an_inbound_lease_lives_lease_ttl(make_gate: GateFactory) -> None:
    """Without ttl_s an inbound lease expires lease_ttl after admission."""
    gate, clock = make_gate(BASE)
    decision = gate.acquire(Call("in", "inbound", N1))
    assert decision.lease is not None
    assert (decision.lease.expires_at, decision.lease.ttl_s) == (clock.now + 30, 30)


def test_no_ttl_exceeds_max_call_duration(make_gate: GateFactory) -> None:
    """A TTL above max_call_duration (1 h here) is capped, on acquire and on renew."""
    gate, clock = make_gate(BASE)
    decision = gate.acquire(Call("in", "inbound", N1), ttl_s=7200)
    assert decision.lease is not None and decision.lease.ttl_s == 3600
    clock.advance(10)
    renewed = gate.renew("in", ttl_s=99_999)
    assert renewed.lease is not None and renewed.lease.ttl_s == 3600
    assert renewed.lease.expires_at == clock.now - 10 + 3600  # and never past max_end


def test_a_renew_with_ttl_replaces_the_ttl_from_then_on(make_gate: GateFactory) -> None:
    """A renew with ttl_s (adopting a webhook's lease) sets it; later renews keep it."""
    gate, clock = make_gate(BASE)
    gate.acquire(Call("in", "inbound", N1), ttl_s=3600)
    clock.advance(5)
    assert gate.renew("in", ttl_s=30).lease.expires_at == clock.now + 30  # type: ignore[union-attr]
    clock.advance(5)
    again = gate.renew("in")
    assert again.lease is not None and (again.lease.ttl_s, again.lease.expires_at) == (
        30, clock.now + 30)


def test_dial_ttl_is_read_from_the_stack(make_gate: GateFactory) -> None:
    """[outbound] dial_ttl sets an outbound lease's first expiry."""
    gate, clock = make_gate(BASE.replace('[outbound]\n', '[outbound]\ndial_ttl = "45s"\n'))
    decision = gate.acquire(Call("out", "outbound", N1))
    assert decision.lease is not None and decision.lease.expires_at == clock.now + 45
