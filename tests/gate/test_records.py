"""Records are values: a step replaces a call's record, it never changes one in place.

So a store always holds the record it last indexed beside the one replacing it, and a
record handed out (in a verdict, a renew outcome, a queue) says what it said when it was
handed out, whatever steps come after. Runs on every store.
"""

from __future__ import annotations

import copy

from tests.conftest import StoreFactory, stack_from
from tests.gate.stacks import BASE, N1

from callgate.gate import Gate
from callgate.model import Call
from callgate.testing import FakeClock


def test_no_step_changes_a_record_it_handed_out(store_factory: StoreFactory) -> None:
    """A lease, its renewal, a queued call and its poll: each record handed out keeps
    its values through every later step (renew, poll, promotion, release, expiry)."""
    stack = stack_from(BASE)
    clock = FakeClock()
    store = store_factory(Gate.limits_for(stack))
    gate = Gate(stack, store, clock)
    held = []
    for name in ("a", "b"):  # number N1 holds 2
        verdict = store.acquire(gate.claim_for(Call(name, "inbound", N1)), clock.now)
        assert verdict.record is not None and verdict.record.state == "leased"
        held.append(verdict.record)
    queued = store.acquire(gate.claim_for(Call("q", "inbound", N1)), clock.now).record
    assert queued is not None and queued.state == "queued"
    before = copy.deepcopy([*held, queued])
    clock.advance(5)
    renewed = store.renew(None, "a", None, clock.now).record
    polled = store.acquire(gate.claim_for(Call("q", "inbound", N1)), clock.now).record
    assert renewed is not None and renewed.expires_at == clock.now + 30
    assert polled is not None and polled.last_poll == clock.now
    store.release(None, "a", clock.now)  # q is promoted into a's slot
    clock.advance(60)
    assert store.expire(clock.now) == 2  # b and the promoted q
    assert [*held, queued] == before
    assert renewed.state == "leased" and renewed.expires_at == clock.now - 60 + 30
    assert polled.state == "queued"
