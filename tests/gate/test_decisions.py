"""Every decision path and reason of DESIGN.md, on every store, on a fake clock."""

from __future__ import annotations

import pytest
from tests.conftest import GateFactory
from tests.gate.stacks import BASE, N1, N2

from callgate.errors import CallConflictError, UnknownNumberError, UnknownProviderError
from callgate.model import Call, Layer, Outcome, Reason, RenewStatus


def inbound(call_id: str, number: str = N1, priority: int = 0) -> Call:
    return Call(call_id, "inbound", number, priority=priority)


def outbound(call_id: str, number: str = N1, attempt: int = 1) -> Call:
    return Call(call_id, "outbound", number, attempt=attempt)


def in_use(gate_usage: dict[str, object], layer: str, scope: str) -> int:
    for row in gate_usage["layers"]:  # type: ignore[attr-defined]
        if row["layer"] == layer and row["scope"] == scope:
            return int(row["in_use"])
    raise KeyError((layer, scope))


def test_inbound_with_room_is_admitted_with_lease_and_key(make_gate: GateFactory) -> None:
    """A call with room everywhere is admitted, holds a lease of lease_ttl and one key."""
    gate, clock = make_gate(BASE)
    decision = gate.acquire(inbound("c1"))
    assert decision.outcome is Outcome.ADMITTED and decision.reason is Reason.ADMITTED
    assert decision.lease is not None
    assert decision.lease.expires_at == clock.now + 30
    assert decision.lease.keys == {"llm": "k1"}


def test_full_number_queues_inbound_with_position_and_hold_message(make_gate: GateFactory) -> None:
    """Inbound over a number's cap is queued, named by layer and scope, with a hold message."""
    gate, _ = make_gate(BASE)
    gate.acquire(inbound("c1"))
    gate.acquire(inbound("c2"))
    decision = gate.acquire(inbound("c3"))
    assert decision.outcome is Outcome.QUEUED
    assert (decision.layer, decision.scope, decision.reason) == (Layer.NUMBER, N1, Reason.CAPACITY)
    assert decision.queue is not None and decision.queue.position == 1
    assert decision.queue.estimated_wait_s == pytest.approx(90.0)  # 1 x 180 s / cap 2
    assert decision.message and "hold" in decision.message


def test_release_promotes_the_head_and_its_next_poll_returns_it(make_gate: GateFactory) -> None:
    """A release promotes the head in the same step; its next poll returns a fresh lease."""
    gate, clock = make_gate(BASE)
    gate.acquire(inbound("c1"))
    gate.acquire(inbound("c2"))
    gate.acquire(inbound("c3"))
    clock.advance(5)
    assert gate.release("c1").released
    assert in_use(gate.usage(), "number", N1) == 2  # c3 already holds c1's slot
    clock.advance(5)
    decision = gate.acquire(inbound("c3"))
    assert decision.outcome is Outcome.ADMITTED and decision.reason is Reason.PROMOTED
    assert decision.lease is not None and decision.lease.expires_at == clock.now - 5 + 30


def test_queue_orders_by_priority_then_arrival(make_gate: GateFactory) -> None:
    """Higher priority goes ahead; equal priority keeps arrival order."""
    gate, _ = make_gate(BASE)
    gate.acquire(inbound("c1"))
    gate.acquire(inbound("c2"))
    gate.acquire(inbound("low-1"))
    gate.acquire(inbound("low-2"))
    vip = gate.acquire(inbound("vip", priority=5))
    assert vip.queue is not None and vip.queue.position == 1
    assert [e["call_id"] for e in gate.queue()] == ["vip", "low-1", "low-2"]
    gate.release("c1")
    assert gate.acquire(inbound("vip", priority=5)).reason is Reason.PROMOTED
    assert gate.acquire(inbound("low-1")).outcome is Outcome.QUEUED


def test_new_arrival_never_overtakes_a_queued_caller(make_gate: GateFactory) -> None:
    """With room free again, an equal-priority newcomer queues behind a waiting caller."""
    text = BASE.replace('keys = ["k1", "k2"]', 'keys = ["k1"]').replace(
        "sessions_per_key = 2", "sessions_per_key = 1")
    gate, clock = make_gate(text)
    gate.acquire(inbound("c1"))
    waiting = gate.acquire(inbound("c2", number=N2))
    assert waiting.outcome is Outcome.QUEUED and waiting.layer is Layer.PROVIDER
    gate.report_provider_error("llm", "k1", 429, retry_after_s=10)
    gate.release("c1")  # the only key is cooling: the head cannot be promoted yet
    newcomer = gate.acquire(inbound("c3", number=N2))
    assert newcomer.outcome is Outcome.QUEUED and newcomer.queue is not None
    assert newcomer.queue.position == 2
    clock.advance(11)
    assert gate.acquire(inbound("c2", number=N2)).reason is Reason.PROMOTED


def test_blocked_head_does_not_block_heads_of_other_numbers(make_gate: GateFactory) -> None:
    """Promotion skips a head that still cannot fit and admits another number's head."""
    text = BASE.replace('[providers.llm]', '[providers.stt]\nkeys = ["s1"]\nsessions_per_key = 1\n'
                        'required = false\n\n[providers.llm]')
    gate, _ = make_gate(text)
    gate.acquire(Call("stt-holder", "inbound", N2, providers=("stt",)))
    gate.acquire(inbound("a"))
    gate.acquire(inbound("b"))  # account 3/3
    q1 = gate.acquire(Call("needs-stt", "inbound", N2, providers=("stt",), priority=9))
    q2 = gate.acquire(inbound("plain"))
    assert q1.outcome is Outcome.QUEUED and q2.outcome is Outcome.QUEUED
    gate.release("a")  # frees the account; the high-priority head still lacks stt
    assert gate.acquire(inbound("plain")).reason is Reason.PROMOTED
    assert gate.acquire(Call("needs-stt", "inbound", N2, providers=("stt",),
                             priority=9)).outcome is Outcome.QUEUED


def test_caller_who_stops_polling_is_dropped_after_poll_timeout(make_gate: GateFactory) -> None:
    """A queue entry not re-polled within poll_timeout is dropped and its poll is rejected."""
    gate, clock = make_gate(BASE)
    gate.acquire(inbound("c1"))
    gate.acquire(inbound("c2"))
    gate.acquire(inbound("gone"))
    gate.acquire(inbound("stays"))
    for _ in range(4):
        clock.advance(10)
        gate.renew("c1")
        gate.renew("c2")
        gate.acquire(inbound("stays"))
    assert [e["call_id"] for e in gate.queue()] == ["stays"]
    decision = gate.acquire(inbound("gone"))
    assert decision.outcome is Outcome.REJECTED and decision.reason is Reason.QUEUE_TIMEOUT


def test_waiting_past_max_wait_is_rejected_with_overflow(make_gate: GateFactory) -> None:
    """Past max_wait a queued caller is rejected with the overflow message and Retry-After."""
    gate, clock = make_gate(BASE)
    gate.acquire(inbound("c1"))
    gate.acquire(inbound("c2"))
    gate.acquire(inbound("c3"))
    for _ in range(6):
        clock.advance(20.5)
        gate.renew("c1")
        gate.renew("c2")
        last = gate.acquire(inbound("c3"))
    assert last.outcome is Outcome.REJECTED and last.reason is Reason.QUEUE_TIMEOUT
    assert last.retry_after_s == 300 and last.message and "call again" in last.message


def test_full_queue_rejects_with_queue_full(make_gate: GateFactory) -> None:
    """Past queue_max on a number, inbound is rejected (queue_full), never silently dropped."""
    gate, _ = make_gate(BASE)
    for i in range(5):
        gate.acquire(inbound(f"c{i}"))
    decision = gate.acquire(inbound("c5"))
    assert (decision.outcome, decision.reason) == (Outcome.REJECTED, Reason.QUEUE_FULL)
    assert (decision.layer, decision.scope) == (Layer.NUMBER, N1)  # the layer that was full
    assert decision.retry_after_s == 300


def test_queue_full_names_a_full_trunk(make_gate: GateFactory) -> None:
    """With no room to queue, a full trunk is named as the refusing layer (a SIP 503)."""
    gate, _ = make_gate(BASE.replace("max_concurrent = 4", "max_concurrent = 1")
                        .replace("queue_max = 3", "queue_max = 0"))
    gate.acquire(inbound("c1"))
    decision = gate.acquire(inbound("c2", number=N2))
    assert (decision.outcome, decision.reason) == (Outcome.REJECTED, Reason.QUEUE_FULL)
    assert (decision.layer, decision.scope) == (Layer.TRUNK, "t1")
    assert decision.retry_after_s == 300


def test_a_retried_queue_full_refusal_names_the_same_layer(make_gate: GateFactory) -> None:
    """A retransmitted call id gets back the refusal it had, naming the same full layer."""
    gate, _ = make_gate(BASE.replace("max_concurrent = 4", "max_concurrent = 1")
                        .replace("queue_max = 3", "queue_max = 0"))
    gate.acquire(inbound("c1"))
    first = gate.acquire(inbound("c2", number=N2))
    again = gate.acquire(inbound("c2", number=N2))
    assert (again.outcome, again.reason) == (Outcome.REJECTED, Reason.QUEUE_FULL)
    assert (again.layer, again.scope) == (first.layer, first.scope) == (Layer.TRUNK, "t1")


def test_queue_full_after_a_promotion_names_the_full_number(make_gate: GateFactory) -> None:
    """A promotion refills the number; the next refusal past queue_max names the number."""
    gate, _ = make_gate(BASE.replace("queue_max = 3", "queue_max = 1"))
    gate.acquire(inbound("c1"))
    gate.acquire(inbound("c2"))
    gate.acquire(inbound("c3"))  # queued: the number is full
    gate.release("c1")  # c3 is promoted into the freed slot; the number is full again
    gate.acquire(inbound("c4"))  # queued
    decision = gate.acquire(inbound("c5"))
    assert (decision.outcome, decision.reason) == (Outcome.REJECTED, Reason.QUEUE_FULL)
    assert decision.layer is Layer.NUMBER


def test_outbound_over_capacity_gets_exponential_backoff(make_gate: GateFactory) -> None:
    """Outbound never queues: retry_after is retry_base x 2^(attempt-1), capped at retry_max."""
    gate, _ = make_gate(BASE)
    gate.acquire(outbound("o1"))
    gate.acquire(outbound("o2"))
    waits = [gate.acquire(outbound("o3", attempt=a)).retry_after_s for a in (1, 2)]
    assert waits == [10.0, 20.0]
    text = BASE.replace("max_attempts = 3", "max_attempts = 9")
    gate, _ = make_gate(text)
    gate.acquire(outbound("o1"))
    gate.acquire(outbound("o2"))
    decision = gate.acquire(outbound("o3", attempt=8))
    assert decision.outcome is Outcome.RETRY_LATER and decision.retry_after_s == 60.0
    assert decision.reason is Reason.CAPACITY and decision.layer is Layer.NUMBER


def test_full_jitter_stays_within_the_backoff_ceiling(make_gate: GateFactory) -> None:
    """Full jitter spreads retries uniformly below the exponential ceiling."""
    gate, _ = make_gate(BASE.replace('jitter = "none"', 'jitter = "full"'))
    gate.acquire(outbound("o1"))
    gate.acquire(outbound("o2"))
    waits = {gate.acquire(outbound("o3", attempt=2)).retry_after_s for _ in range(20)}
    assert all(w is not None and 0 <= w <= 20 for w in waits) and len(waits) > 5


def test_outbound_window_retry_after_is_exact(make_gate: GateFactory) -> None:
    """A rate window answers with the moment its oldest counted admission leaves it."""
    text = BASE.replace('max_concurrent = 2\n\n[numbers."+15550000002"]',
                        'max_concurrent = 2\nwindows = [{direction = "outbound", limit = 1, '
                        'per = "1m"}]\n\n[numbers."+15550000002"]')
    gate, clock = make_gate(text)
    gate.acquire(outbound("o1"))
    gate.release("o1")
    clock.advance(15)
    decision = gate.acquire(outbound("o2"))
    assert (decision.outcome, decision.layer, decision.scope, decision.reason) == (
        Outcome.RETRY_LATER, Layer.WINDOW, f"{N1}:outbound:1m", Reason.RATE_WINDOW)
    assert decision.retry_after_s == 45.0
    assert gate.acquire(inbound("i1")).outcome is Outcome.ADMITTED  # inbound is not counted
    clock.advance(45)
    assert gate.acquire(outbound("o2")).outcome is Outcome.ADMITTED


def test_several_blockers_name_the_one_with_the_largest_retry_after(make_gate: GateFactory) -> None:
    """Blocked by a window (45 s) and a full number (10 s backoff), the window is named."""
    text = BASE.replace('max_concurrent = 2\n\n[numbers."+15550000002"]',
                        'max_concurrent = 1\nwindows = [{direction = "outbound", limit = 1, '
                        'per = "1m"}]\n\n[numbers."+15550000002"]')
    gate, clock = make_gate(text)
    gate.acquire(outbound("o1"))
    clock.advance(15)
    decision = gate.acquire(outbound("o2"))
    assert decision.layer is Layer.WINDOW and decision.retry_after_s == 45.0


def test_last_attempt_is_rejected_and_the_rejection_replays(make_gate: GateFactory) -> None:
    """At max_attempts a blocked outbound call is rejected; the same id replays the rejection."""
    gate, clock = make_gate(BASE)
    gate.acquire(outbound("o1"))
    gate.acquire(outbound("o2"))
    decision = gate.acquire(outbound("o3", attempt=3))
    assert decision.outcome is Outcome.REJECTED and decision.reason is Reason.MAX_ATTEMPTS
    gate.release("o1")
    assert gate.acquire(outbound("o3", attempt=3)).reason is Reason.MAX_ATTEMPTS
    clock.advance(61)  # past the tombstone: a fresh evaluation
    assert gate.acquire(outbound("o3", attempt=3)).outcome is Outcome.ADMITTED


def test_reserved_inbound_keeps_the_last_slots_for_inbound(make_gate: GateFactory) -> None:
    """Outbound may use the account only up to cap - reserved_inbound; inbound uses it all."""
    gate, _ = make_gate(BASE.replace('plan = "small"', 'plan = "small"\nreserved_inbound = 1'))
    gate.acquire(outbound("o1"))
    gate.acquire(outbound("o2", number=N2))
    decision = gate.acquire(outbound("o3", number=N2))
    assert (decision.layer, decision.scope, decision.reason) == (
        Layer.ACCOUNT, "acme", Reason.RESERVED_INBOUND)
    assert gate.acquire(inbound("i1", number=N2)).outcome is Outcome.ADMITTED


def test_outbound_may_not_take_room_a_queued_inbound_head_needs(make_gate: GateFactory) -> None:
    """A trunk slot that a waiting inbound head needs is not given to an outbound call."""
    text = BASE.replace("[trunks.t1]\nmax_concurrent = 4", "[trunks.t1]\nmax_concurrent = 2")
    text = text.replace('max_concurrent = 2\n\n[numbers."+15550000002"]',
                        'max_concurrent = 1\n\n[numbers."+15550000002"]')
    gate, _ = make_gate(text)
    gate.acquire(inbound("i1"))
    assert gate.acquire(inbound("i2")).outcome is Outcome.QUEUED  # waits for the number
    decision = gate.acquire(outbound("o1", number=N2))
    assert (decision.outcome, decision.layer, decision.scope, decision.reason) == (
        Outcome.RETRY_LATER, Layer.TRUNK, "t1", Reason.INBOUND_WAITING)
    gate.release("i1")
    assert gate.acquire(inbound("i2")).reason is Reason.PROMOTED


def test_key_with_most_headroom_wins_and_ties_go_by_config_order(make_gate: GateFactory) -> None:
    """Keys fill evenly: k1, k2, k1, k2 (most headroom, ties in config order)."""
    text = BASE.replace("[plans.small]\nmax_concurrent = 3", "[plans.small]\nmax_concurrent = 9")
    gate, _ = make_gate(text)
    keys = [gate.acquire(inbound(f"c{i}", number=(N1, N2)[i % 2])).lease for i in range(4)]
    assert [lease.keys["llm"] for lease in keys if lease] == ["k1", "k2", "k1", "k2"]


def test_cooling_key_is_skipped_and_all_cooling_queues_or_retries(make_gate: GateFactory) -> None:
    """A 429 cools a key; with every key cooling inbound queues and outbound waits for the end."""
    gate, clock = make_gate(BASE)
    gate.report_provider_error("llm", "k1", 429, retry_after_s=10)
    assert gate.acquire(inbound("c1")).lease.keys == {"llm": "k2"}  # type: ignore[union-attr]
    gate.report_provider_error("llm", "k2", 503)  # the pool's cooldown: 20 s
    queued = gate.acquire(inbound("c2"))
    assert (queued.outcome, queued.layer, queued.scope, queued.reason) == (
        Outcome.QUEUED, Layer.PROVIDER, "llm", Reason.PROVIDER_COOLDOWN)
    retry = gate.acquire(outbound("o1", number=N2))
    assert retry.reason is Reason.PROVIDER_COOLDOWN and retry.retry_after_s == 10.0
    cooldowns = {c["scope"]: c["until"] for c in gate.usage()["cooldowns"]}
    assert cooldowns == {"llm:k1": clock.now + 10, "llm:k2": clock.now + 20}
    clock.advance(10)
    assert gate.acquire(inbound("c2")).reason is Reason.PROMOTED


def test_unauthorised_key_is_disabled_until_reload(make_gate: GateFactory) -> None:
    """401/403 disable a key until the stack is reloaded."""
    gate, clock = make_gate(BASE)
    gate.report_provider_error("llm", "k1", 401)
    clock.advance(3600)
    assert gate.acquire(inbound("c1")).lease.keys == {"llm": "k2"}  # type: ignore[union-attr]
    gate.reload(gate.stack)
    assert gate.acquire(inbound("c2")).lease.keys == {"llm": "k1"}  # type: ignore[union-attr]


def test_pool_cap_bounds_sessions_below_keys_times_sessions(make_gate: GateFactory) -> None:
    """max_sessions caps the whole pool even when keys have room."""
    text = BASE.replace("sessions_per_key = 2", "sessions_per_key = 2\nmax_sessions = 1")
    gate, _ = make_gate(text)
    gate.acquire(inbound("c1"))
    decision = gate.acquire(outbound("o1", number=N2))
    assert (decision.layer, decision.scope, decision.reason) == (
        Layer.PROVIDER, "llm", Reason.CAPACITY)


def test_call_overrides_replace_providers_and_resources(make_gate: GateFactory) -> None:
    """A call's providers list replaces the required set; resources override per-call units."""
    text = BASE + '\n[resources.db]\ncapacity = 3\nper_call = 1\n'
    gate, _ = make_gate(text)
    decision = gate.acquire(Call("c1", "inbound", N1, providers=(), resources={"db": 3}))
    assert decision.lease is not None and decision.lease.keys == {}
    blocked = gate.acquire(outbound("o1", number=N2))
    assert (blocked.layer, blocked.scope) == (Layer.RESOURCE, "db")
    with pytest.raises(UnknownProviderError):
        gate.acquire(Call("c2", "inbound", N1, providers=("nope",)))


def test_idempotent_acquire_replays_and_conflicts(make_gate: GateFactory) -> None:
    """The same call id replays its answer; a different body is a conflict."""
    gate, _ = make_gate(BASE)
    first = gate.acquire(inbound("c1"))
    again = gate.acquire(inbound("c1"))
    assert again.lease == first.lease
    assert in_use(gate.usage(), "number", N1) == 1
    with pytest.raises(CallConflictError):
        gate.acquire(inbound("c1", priority=3))


def test_released_or_expired_call_id_is_call_ended(make_gate: GateFactory) -> None:
    """A call id that was released or expired is rejected with call_ended."""
    gate, clock = make_gate(BASE)
    gate.acquire(inbound("c1"))
    gate.acquire(inbound("c2"))
    gate.release("c1")
    assert gate.acquire(inbound("c1")).reason is Reason.CALL_ENDED
    clock.advance(31)
    assert gate.acquire(inbound("c2")).reason is Reason.CALL_ENDED


def test_release_is_idempotent_and_cancels_a_queued_call(make_gate: GateFactory) -> None:
    """Releasing twice frees once; releasing a queued call cancels it."""
    gate, _ = make_gate(BASE)
    gate.acquire(inbound("c1"))
    gate.acquire(inbound("c2"))
    gate.acquire(inbound("q"))
    assert gate.release("q") == gate.release("q").__class__(False, True)
    assert gate.queue() == []
    assert gate.release("c1").released and not gate.release("c1").released
    assert not gate.release("never-seen").released


def test_unrenewed_lease_expires_and_frees_its_slots(make_gate: GateFactory) -> None:
    """A lease not renewed within its TTL expires; renewing keeps it alive."""
    gate, clock = make_gate(BASE)
    gate.acquire(inbound("alive"))
    gate.acquire(inbound("dead"))
    for _ in range(4):
        clock.advance(10)
        assert gate.renew("alive").status is RenewStatus.RENEWED
    assert in_use(gate.usage(), "number", N1) == 1
    assert gate.renew("dead").status is RenewStatus.EXPIRED
    assert gate.renew("never").status is RenewStatus.UNKNOWN


def test_max_call_duration_bounds_every_lease(make_gate: GateFactory) -> None:
    """Renewals never push a lease past max_call_duration."""
    gate, clock = make_gate(BASE.replace('max_call_duration = "1h"', 'max_call_duration = "50s"'))
    start = clock.now
    gate.acquire(inbound("c1"))
    clock.advance(25)
    result = gate.renew("c1")
    assert result.lease is not None and result.lease.expires_at == start + 50
    clock.advance(25)
    assert gate.renew("c1").status is RenewStatus.EXPIRED


def test_reload_keeps_leases_and_queue_and_promotes_into_new_room(make_gate: GateFactory) -> None:
    """A reload keeps leases and queue; a raised cap promotes, a lowered one evicts nothing."""
    gate, _ = make_gate(BASE)
    gate.acquire(inbound("c1"))
    gate.acquire(inbound("c2"))
    gate.acquire(inbound("q"))
    from tests.conftest import stack_from

    gate.reload(stack_from(BASE.replace('"+15550000001"]\naccount = "acme"\ntrunk = "t1"\n'
                                        'max_concurrent = 2', '"+15550000001"]\naccount = "acme"'
                                        '\ntrunk = "t1"\nmax_concurrent = 3')))
    assert gate.acquire(inbound("q")).reason is Reason.PROMOTED
    gate.reload(stack_from(BASE.replace("[trunks.t1]\nmax_concurrent = 4",
                                        "[trunks.t1]\nmax_concurrent = 1")))
    assert in_use(gate.usage(), "trunk", "t1") == 3
    assert gate.renew("c1").status is RenewStatus.RENEWED
    assert gate.acquire(inbound("new", number=N2)).outcome is Outcome.QUEUED


def test_shadow_mode_admits_everything_and_names_what_would_block(make_gate: GateFactory) -> None:
    """Shadow mode always admits, with reason shadow and the layer that would have refused."""
    gate, _ = make_gate(BASE.replace('tombstone_ttl = "60s"', 'tombstone_ttl = "60s"\n'
                                     'mode = "shadow"'))
    gate.acquire(inbound("c1"))
    gate.acquire(inbound("c2"))
    decision = gate.acquire(inbound("c3"))
    assert (decision.outcome, decision.layer, decision.reason) == (
        Outcome.ADMITTED, Layer.NUMBER, Reason.SHADOW)
    assert in_use(gate.usage(), "number", N1) == 3


def test_unknown_number_is_a_clear_error(make_gate: GateFactory) -> None:
    """A number the stack does not have is refused with an error naming it."""
    gate, _ = make_gate(BASE)
    with pytest.raises(UnknownNumberError, match=r"\+15559999999"):
        gate.acquire(inbound("c1", number="+15559999999"))


def test_usage_returns_to_zero_after_everything_ends(make_gate: GateFactory) -> None:
    """Once every call is released or expired, every layer is back to zero."""
    gate, clock = make_gate(BASE)
    for i in range(6):
        gate.acquire(inbound(f"c{i}", number=(N1, N2)[i % 2]))
    gate.release("c0")
    clock.advance(200)
    gate.expire()
    usage = gate.usage()
    assert all(row["in_use"] == 0 for row in usage["layers"])
    assert usage["leases"] == 0 and gate.queue() == []


def test_the_store_counts_leases_that_expired_unreleased(make_gate: GateFactory) -> None:
    """Every lease that expires unreleased is counted once, whichever step expired it."""
    gate, clock = make_gate(BASE)
    gate.acquire(inbound("a"))
    gate.acquire(inbound("b"))
    gate.acquire(inbound("c", number=N2))
    gate.release("c")
    clock.advance(31)
    gate.acquire(inbound("d", number=N2))  # this step's housekeeping expires a and b
    gate.expire()
    assert gate.usage()["expired_total"] == 2


def test_a_pool_named_twice_takes_one_session(make_gate: GateFactory) -> None:
    """A call listing a provider twice holds one session of it, never two on one key."""
    gate, _ = make_gate(BASE.replace("sessions_per_key = 2", "sessions_per_key = 1"))
    decision = gate.acquire(Call("c1", "inbound", N1, providers=("llm", "llm")))
    assert decision.outcome is Outcome.ADMITTED
    rows = {r["scope"]: r["in_use"] for r in gate.usage()["layers"] if r["layer"] == "provider"}
    assert rows == {"llm": 1, "llm:k1": 1, "llm:k2": 0}


def test_an_expired_rejection_no_longer_replays(make_gate: GateFactory) -> None:
    """Past tombstone_ttl a rejected id is decided afresh, whenever the store purges."""
    gate, clock = make_gate(BASE)
    gate.acquire(outbound("o1"))
    gate.acquire(outbound("o2"))
    assert gate.acquire(outbound("o3", attempt=3)).reason is Reason.MAX_ATTEMPTS
    gate.release("o1")
    clock.advance(60)  # exactly the tombstone's end
    assert gate.acquire(outbound("o3", attempt=3)).outcome is Outcome.ADMITTED


def test_reload_removing_a_window_a_queued_call_names_keeps_working(
    make_gate: GateFactory,
) -> None:
    """A queued claim may name a window a reload removed; promotion and release still work."""
    windowed = BASE.replace('max_concurrent = 2\n\n[numbers."+15550000002"]',
                            'max_concurrent = 1\nwindows = [{limit = 50, per = "1h"}]\n\n'
                            '[numbers."+15550000002"]')
    gate, _ = make_gate(windowed)
    gate.acquire(inbound("c1"))
    assert gate.acquire(inbound("q1")).outcome is Outcome.QUEUED
    from tests.conftest import stack_from

    gate.reload(stack_from(windowed.replace('\nwindows = [{limit = 50, per = "1h"}]', "")))
    assert gate.release("c1").released
    assert gate.acquire(inbound("q1")).reason is Reason.PROMOTED
