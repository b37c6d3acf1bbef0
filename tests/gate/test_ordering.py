"""The ordering rules of ``stores/base.py``, one or more tests per rule, on every store.

The stack lists its accounts (zulu, then acme) and its keys (kz, ka, km) out of
alphabetical order, so that "config order" and "by name" give different answers.
"""

from __future__ import annotations

from tests.conftest import GateFactory, stack_from

from callgate.model import Call, Layer, Outcome, Reason, RenewStatus

HEAD = """
[gate]
lease_ttl = "30s"
max_call_duration = "1h"
poll_timeout = "30s"
tombstone_ttl = "60s"
ended_ttl = "10m"

[trunks.t1]
max_concurrent = 10

[plans.two]
max_concurrent = 2

[plans.three]
max_concurrent = 3

[accounts.zulu]
plan = "two"

[numbers."+15550000001"]
account = "zulu"
trunk = "t1"
max_concurrent = 3

[numbers."+15550000002"]
account = "zulu"
trunk = "t1"
max_concurrent = 3
"""
ACME = """
[accounts.acme]
plan = "three"

[numbers."+15550000003"]
account = "acme"
trunk = "t1"
max_concurrent = 3

[numbers."+15550000004"]
account = "acme"
trunk = "t1"
max_concurrent = 3
"""
TAIL = """
[providers.llm]
keys = ["kz", "ka", "km"]
sessions_per_key = 2
cooldown = "20s"

[providers.stt]
keys = ["s1"]
sessions_per_key = 1
required = false

[inbound]
queue_max = 5
max_wait = "5m"

[outbound]
jitter = "none"
retry_base = "10s"
retry_max = "60s"
max_attempts = 5
"""
STACK = HEAD + ACME + TAIL

Z1, Z2, A1, A2 = "+15550000001", "+15550000002", "+15550000003", "+15550000004"


def inbound(call_id: str, number: str, priority: int = 0) -> Call:
    return Call(call_id, "inbound", number, priority=priority)


def in_use(gate_usage: dict[str, object], layer: str, scope: str) -> int:
    for row in gate_usage["layers"]:  # type: ignore[attr-defined]
        if row["layer"] == layer and row["scope"] == scope:
            return int(row["in_use"])
    raise KeyError((layer, scope))


def outcome(gate_acquire: object) -> tuple[Outcome, Reason]:
    return gate_acquire.outcome, gate_acquire.reason  # type: ignore[attr-defined]


# rule 1: a lookup without an account -----------------------------------------------------
def test_lookup_without_account_finds_a_live_lease_behind_an_earlier_accounts_end(
        make_gate: GateFactory) -> None:
    """Renew without an account finds acme's live lease, not zulu's (first) ended one."""
    gate, _ = make_gate(STACK)
    gate.acquire(inbound("x", Z1))
    assert gate.release("x", account="zulu").released
    gate.acquire(inbound("x", A1))
    renewed = gate.renew("x")
    assert renewed.status is RenewStatus.RENEWED and renewed.lease is not None
    assert renewed.lease.account == "acme"


def test_lookup_without_account_takes_accounts_in_config_order(make_gate: GateFactory) -> None:
    """Two live leases: zulu's (listed first) is found; two ended ones: zulu's again."""
    gate, clock = make_gate(STACK)
    gate.acquire(inbound("x", Z1))
    gate.acquire(inbound("x", A1))
    assert gate.release("x").released
    assert (in_use(gate.usage(), "account", "zulu"), in_use(gate.usage(), "account", "acme")) == (
        0, 1)
    gate.acquire(inbound("y", Z1))
    clock.advance(20)
    gate.acquire(inbound("y", A1))
    clock.advance(15)  # zulu's y expired at 30; acme's is live until 50
    assert gate.release("y", account="acme").released
    # Both ended now: zulu's (expired) comes first, not acme's (released, first by name).
    assert gate.renew("y").status is RenewStatus.EXPIRED


def test_lookup_without_account_searches_only_the_stacks_accounts(
        make_gate: GateFactory) -> None:
    """After a reload drops an account, its lease is found only when the account is named."""
    gate, _ = make_gate(STACK)
    gate.acquire(inbound("x", A1))
    gate.reload(stack_from(HEAD + TAIL))
    assert list(gate.stack.accounts) == ["zulu"]
    assert not gate.release("x").released
    assert gate.release("x", account="acme").released


# rule 2: arrival -----------------------------------------------------------------------------
def test_a_poll_keeps_the_callers_place_in_the_queue(make_gate: GateFactory) -> None:
    """Queue order is (priority, arrival); polling never moves a caller back."""
    gate, clock = make_gate(STACK)
    gate.acquire(inbound("l1", Z1))
    gate.acquire(inbound("l2", Z1))
    gate.acquire(inbound("q1", Z1))
    gate.acquire(inbound("q2", Z1))
    clock.advance(5)
    first = gate.acquire(inbound("q1", Z1))
    assert first.queue is not None and first.queue.position == 1
    late = gate.acquire(inbound("q3", Z1))
    vip = gate.acquire(inbound("vip", Z1, priority=1))
    assert late.queue is not None and late.queue.position == 3
    assert vip.queue is not None and vip.queue.position == 1
    assert [e["call_id"] for e in gate.queue()] == ["vip", "q1", "q2", "q3"]


# rule 3: promotion order ---------------------------------------------------------------------
def test_a_promoted_heads_successor_competes_at_its_own_priority(make_gate: GateFactory) -> None:
    """Two slots free at once go to the two priority-5 callers of one number, not to the
    earlier priority-0 head of another number."""
    gate, clock = make_gate(STACK)
    gate.acquire(inbound("l1", Z2))
    gate.acquire(inbound("l2", Z2))  # zulu 2/2
    assert gate.acquire(inbound("low", Z2)).outcome is Outcome.QUEUED
    assert gate.acquire(inbound("vip1", Z1, priority=5)).outcome is Outcome.QUEUED
    assert gate.acquire(inbound("vip2", Z1, priority=5)).outcome is Outcome.QUEUED
    clock.advance(20)
    for call in (inbound("low", Z2), inbound("vip1", Z1, 5), inbound("vip2", Z1, 5)):
        gate.acquire(call)
    clock.advance(11)  # l1 and l2 expired at 30: two account slots free in one step
    assert outcome(gate.acquire(inbound("vip2", Z1, 5))) == (Outcome.ADMITTED, Reason.PROMOTED)
    assert outcome(gate.acquire(inbound("vip1", Z1, 5))) == (Outcome.ADMITTED, Reason.PROMOTED)
    assert gate.acquire(inbound("low", Z2)).outcome is Outcome.QUEUED


def test_a_head_that_does_not_fit_holds_back_only_its_own_number(
        make_gate: GateFactory) -> None:
    """A blocked head is passed over: another number's head is promoted, not the caller
    behind it on its own number (who would fit)."""
    gate, _ = make_gate(STACK)
    gate.acquire(Call("holder", "inbound", Z1, providers=("llm", "stt")))  # stt 1/1
    for call_id in ("a1", "a2", "a3"):
        gate.acquire(inbound(call_id, A1))  # A1 3/3, acme 3/3
    big = Call("big", "inbound", A1, priority=9, providers=("llm", "stt"))
    assert gate.acquire(big).outcome is Outcome.QUEUED
    assert gate.acquire(inbound("small", A1)).outcome is Outcome.QUEUED
    assert gate.acquire(inbound("other", A2)).outcome is Outcome.QUEUED
    assert gate.release("a1").released  # one acme slot; big still lacks stt
    assert outcome(gate.acquire(inbound("other", A2))) == (Outcome.ADMITTED, Reason.PROMOTED)
    assert gate.acquire(inbound("small", A1)).outcome is Outcome.QUEUED
    assert gate.acquire(big).outcome is Outcome.QUEUED


# rule 4: which head a release promotes -------------------------------------------------------
def test_a_release_gives_no_precedence_to_its_own_number(make_gate: GateFactory) -> None:
    """Releasing a call on A2 promotes the earlier equal-priority head on A1."""
    gate, _ = make_gate(STACK)
    gate.acquire(inbound("a", A1))
    gate.acquire(inbound("b", A1))
    gate.acquire(inbound("c", A2))  # acme 3/3
    assert gate.acquire(inbound("first", A1)).outcome is Outcome.QUEUED
    assert gate.acquire(inbound("second", A2)).outcome is Outcome.QUEUED
    assert gate.release("c").released
    assert outcome(gate.acquire(inbound("first", A1))) == (Outcome.ADMITTED, Reason.PROMOTED)
    second = gate.acquire(inbound("second", A2))
    assert second.outcome is Outcome.QUEUED and second.queue is not None
    assert second.queue.position == 1


def test_cancelling_a_queued_call_makes_the_next_caller_the_head(make_gate: GateFactory) -> None:
    """Releasing a queued call cancels it; the caller behind it becomes first and is next."""
    gate, _ = make_gate(STACK)
    gate.acquire(inbound("a", A1))
    gate.acquire(inbound("b", A1))
    gate.acquire(inbound("c", A1))
    gate.acquire(inbound("q1", A1))
    gate.acquire(inbound("q2", A1))
    assert gate.release("q1").cancelled
    q2 = gate.acquire(inbound("q2", A1))
    assert q2.queue is not None and q2.queue.position == 1
    gate.release("a")
    assert outcome(gate.acquire(inbound("q2", A1))) == (Outcome.ADMITTED, Reason.PROMOTED)


# rule 5: key choice ---------------------------------------------------------------------------
def test_equal_headroom_goes_to_the_key_listed_first(make_gate: GateFactory) -> None:
    """Keys fill evenly in config order (kz, ka, km), not by name."""
    gate, _ = make_gate(STACK)
    calls = [inbound("z1", Z1), inbound("z2", Z2), inbound("a1", A1), inbound("a2", A1),
             inbound("a3", A2)]
    keys = []
    for call in calls:
        lease = gate.acquire(call).lease
        assert lease is not None
        keys.append(lease.keys["llm"])
    assert keys == ["kz", "ka", "km", "kz", "ka"]
    gate.release("a2")  # kz back to one session: km (1 used) and kz tie, kz is listed first
    gate.release("z2")  # ka back to one session too
    lease = gate.acquire(inbound("next", A1)).lease
    assert lease is not None and lease.keys == {"llm": "kz"}


def test_a_cooling_key_is_skipped_even_with_the_most_headroom(make_gate: GateFactory) -> None:
    """A key cooling down is never chosen, however empty; the next best key is."""
    gate, clock = make_gate(STACK)
    gate.report_provider_error("llm", "kz", 429)
    keys = []
    for call in (inbound("a1", A1), inbound("a2", A1), inbound("a3", A2)):
        lease = gate.acquire(call).lease
        assert lease is not None
        keys.append(lease.keys["llm"])
    assert keys == ["ka", "km", "ka"]
    clock.advance(20)  # the cooldown is over: kz has the most headroom again
    lease = gate.acquire(inbound("z1", Z1)).lease
    assert lease is not None and lease.keys == {"llm": "kz"}


def test_shadow_mode_takes_the_roomiest_key_when_every_key_is_cooling(
        make_gate: GateFactory) -> None:
    """Shadow mode admits with the key of most headroom among all, ties to the first listed."""
    gate, _ = make_gate(STACK.replace('ended_ttl = "10m"', 'ended_ttl = "10m"\nmode = "shadow"'))
    for key in ("km", "ka", "kz"):
        gate.report_provider_error("llm", key, 429)
    first = gate.acquire(inbound("a1", A1))
    second = gate.acquire(inbound("a2", A1))
    assert (first.outcome, first.layer, first.reason) == (
        Outcome.ADMITTED, Layer.PROVIDER, Reason.SHADOW)
    assert first.lease is not None and second.lease is not None
    assert (first.lease.keys, second.lease.keys) == ({"llm": "kz"}, {"llm": "ka"})


# rule 6: expiry before promotion --------------------------------------------------------------
def test_a_caller_past_its_poll_timeout_is_not_promoted_into_room_freed_at_that_instant(
        make_gate: GateFactory) -> None:
    """Leases and a caller fall due at one instant: the caller is dropped, the next promoted."""
    gate, clock = make_gate(STACK)
    gate.acquire(inbound("l1", Z1))
    gate.acquire(inbound("l2", Z1))  # zulu 2/2, both expire at 30
    assert gate.acquire(inbound("gone", Z1)).outcome is Outcome.QUEUED  # never polls again
    clock.advance(10)
    assert gate.acquire(inbound("stays", Z1)).outcome is Outcome.QUEUED
    clock.advance(20)  # t=30: l1, l2 expire; gone's poll timeout (0 + 30) is due too
    assert outcome(gate.acquire(inbound("stays", Z1))) == (Outcome.ADMITTED, Reason.PROMOTED)
    gone = gate.acquire(inbound("gone", Z1))
    assert (gone.outcome, gone.reason) == (Outcome.REJECTED, Reason.QUEUE_TIMEOUT)


def test_due_changes_happen_at_the_next_step_judged_by_its_clock(make_gate: GateFactory) -> None:
    """Room freed at t=30 but first seen at t=45: the head that stopped polling at 10 is
    dropped (timed out at 40), the next is promoted with a TTL from t=45."""
    gate, clock = make_gate(STACK)
    start = clock.now
    gate.acquire(inbound("l1", Z1))
    gate.acquire(inbound("l2", Z1))
    gate.acquire(inbound("head", Z1))
    gate.acquire(inbound("next", Z1))
    clock.advance(10)
    gate.acquire(inbound("head", Z1))
    gate.acquire(inbound("next", Z1))
    clock.advance(10)
    gate.acquire(inbound("next", Z1))
    assert gate.renew("l2").status is RenewStatus.RENEWED  # l1 alone expires, at 30
    clock.advance(25)  # t=45, the first step since l1 expired
    promoted = gate.acquire(inbound("next", Z1))
    assert (promoted.outcome, promoted.reason) == (Outcome.ADMITTED, Reason.PROMOTED)
    assert promoted.lease is not None
    assert (promoted.lease.admitted_at, promoted.lease.expires_at) == (start + 45, start + 75)
    assert gate.acquire(inbound("head", Z1)).reason is Reason.QUEUE_TIMEOUT


# rule 7: blockers ------------------------------------------------------------------------------
def test_equal_blockers_are_named_in_claim_order(make_gate: GateFactory) -> None:
    """Trunk, number and account all full with the same backoff: the trunk is named."""
    gate, _ = make_gate(STACK.replace("[trunks.t1]\nmax_concurrent = 10",
                                      "[trunks.t1]\nmax_concurrent = 2").replace(
        'account = "zulu"\ntrunk = "t1"\nmax_concurrent = 3',
        'account = "zulu"\ntrunk = "t1"\nmax_concurrent = 2', 1))
    gate.acquire(Call("o1", "outbound", Z1))
    gate.acquire(Call("o2", "outbound", Z1))
    blocked = gate.acquire(Call("o3", "outbound", Z1))
    assert (blocked.outcome, blocked.layer, blocked.scope, blocked.retry_after_s) == (
        Outcome.RETRY_LATER, Layer.TRUNK, "t1", 10.0)


# rule 8: usage ----------------------------------------------------------------------------------
def test_usage_lists_cooldowns_by_scope(make_gate: GateFactory) -> None:
    """Cooldowns reported in any order are listed by scope name."""
    gate, _ = make_gate(STACK)
    for key in ("km", "kz", "ka"):
        gate.report_provider_error("llm", key, 429)
    assert [c["scope"] for c in gate.usage()["cooldowns"]] == ["llm:ka", "llm:km", "llm:kz"]
