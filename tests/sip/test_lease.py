"""The lease of one SIP dialog: decided, renewed while it lives, released exactly once."""

from __future__ import annotations

from tests.conftest import stack_from

from callgate.gate import Gate
from callgate.model import Call, Outcome, Reason
from callgate.service.metrics import Metrics
from callgate.sip.lease import DialogLease
from callgate.testing import FakeClock, memory_gate

STACK = """
[gate]
lease_ttl = "30s"
[trunks.main]
max_concurrent = 5
[plans.basic]
max_concurrent = 5
[accounts.acme]
plan = "basic"
[numbers."+14155550100"]
account = "acme"
trunk = "main"
max_concurrent = 1
[inbound]
queue_max = 1
max_wait = "60s"
"""
NUMBER = "+14155550100"


def lease_for(call_id: str, gate: Gate, metrics: Metrics | None = None) -> DialogLease:
    return DialogLease(gate, metrics, Call(call_id, "inbound", NUMBER), "acme")


def in_use(gate: Gate) -> int:
    layers = gate.usage()["layers"]
    return int(next(row["in_use"] for row in layers if row["scope"] == NUMBER))


def test_an_admitted_dialog_releases_its_slot_exactly_once() -> None:
    """BYE then a late CANCEL (or a dead leg): the second release is a no-op."""
    gate = memory_gate(stack_from(STACK))
    lease = lease_for("c1", gate)
    assert lease.decide().outcome is Outcome.ADMITTED and in_use(gate) == 1
    assert lease.release("caller_bye") is True
    assert lease.release("dead") is False
    assert lease.ended_by == "caller_bye" and in_use(gate) == 0


def test_renewing_keeps_the_lease_past_its_ttl() -> None:
    """Heartbeats every ttl/3 keep the slot for longer than one TTL."""
    clock = FakeClock()
    gate = memory_gate(stack_from(STACK), clock)
    lease = lease_for("c1", gate)
    lease.decide()
    assert lease.renew_interval_s == 10.0
    for _ in range(9):  # 90 s, three TTLs
        clock.advance(lease.renew_interval_s)
        assert lease.renew() is True
    gate.expire()
    assert in_use(gate) == 1


def test_a_lease_that_expired_tells_the_edge_to_end_the_call() -> None:
    """No heartbeat for a whole TTL: the gate frees the slot and renew() says so."""
    clock = FakeClock()
    gate = memory_gate(stack_from(STACK), clock)
    lease = lease_for("c1", gate)
    lease.decide()
    clock.advance(31)
    gate.expire()
    assert lease.renew() is False and in_use(gate) == 0


def test_a_queued_dialog_is_promoted_by_asking_again_and_a_cancel_leaves_the_queue() -> None:
    """The same acquire re-polled returns the promoted lease; releasing a queued call cancels it."""
    gate = memory_gate(stack_from(STACK))
    first, second, third = (lease_for(c, gate) for c in ("c1", "c2", "c3"))
    first.decide()
    assert second.decide().outcome is Outcome.QUEUED
    assert third.decide().reason is Reason.QUEUE_FULL
    first.release("caller_bye")
    promoted = second.decide()
    assert promoted.outcome is Outcome.ADMITTED and promoted.reason is Reason.PROMOTED
    second.release("agent_bye")
    fourth = lease_for("c4", gate)
    assert fourth.decide().outcome is Outcome.ADMITTED
    fifth = lease_for("c5", gate)
    assert fifth.decide().outcome is Outcome.QUEUED
    assert fifth.release("caller_cancel") is True
    assert all(row["queued"] == 0 for row in gate.usage()["layers"])


def test_a_refused_dialog_holds_nothing_to_release() -> None:
    """A refusal took no slot: release() only marks the dialog ended."""
    gate = memory_gate(stack_from(STACK.replace("queue_max = 1", "queue_max = 0")))
    lease_for("c1", gate).decide()
    refused = lease_for("c2", gate)
    assert refused.decide().outcome is Outcome.REJECTED
    assert refused.release("refused") is True and in_use(gate) == 1


def test_decisions_are_counted_in_metrics() -> None:
    """Every decision of the edge is counted like the HTTP edge's."""
    gate = memory_gate(stack_from(STACK))
    metrics = Metrics(gate)
    lease_for("c1", gate, metrics).decide()
    text = metrics.render().decode()
    assert 'callgate_decisions_total{layer="number",outcome="admitted",reason="admitted"} 1.0' \
        in text
