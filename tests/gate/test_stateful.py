"""Random call sequences against every store, judged by a model this test keeps itself.

The store's own ``usage()`` is compared with the model, never trusted to judge itself:
caps are checked on the model's count of live leases, windows on the model's log of
admissions, queue order on the model's record of arrivals.
"""

from __future__ import annotations

import itertools
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from pydantic import ValidationError
from tests.conftest import make_store, stack_from
from tests.stores import redis_server

from callgate.gate import Gate
from callgate.model import (
    ATTEMPT_MAX,
    PRIORITY_MAX,
    PRIORITY_MIN,
    Call,
    Outcome,
    Reason,
    RenewStatus,
)
from callgate.service.schemas import CallRequest
from callgate.stores.base import Store
from callgate.testing import FakeClock

STACK = """
[gate]
lease_ttl = "20s"
poll_timeout = "30s"
tombstone_ttl = "10s"

[trunks.t1]
max_concurrent = 3
max_cps = 3

[trunks.t2]
max_concurrent = 2

[plans.p4]
max_concurrent = 4

[plans.p2]
max_concurrent = 2

[accounts.acme]
plan = "p4"
reserved_inbound = 1

[accounts.beta]
plan = "p2"

[numbers."+15550000001"]
account = "acme"
trunk = "t1"
max_concurrent = 2

[numbers."+15550000002"]
account = "acme"
trunk = "t2"
max_concurrent = 2

[numbers."+15550000003"]
account = "beta"
trunk = "t1"
max_concurrent = 1
windows = [{direction = "outbound", limit = 2, per = "1m"}]

[providers.llm]
keys = ["k1", "k2"]
sessions_per_key = 2
max_sessions = 3

[resources.db]
capacity = 4

[inbound]
queue_max = 3
max_wait = "1m"

[outbound]
jitter = "none"
max_attempts = 3
"""
BIGGER = STACK.replace("max_concurrent = 3\nmax_cps = 3", "max_concurrent = 4\nmax_cps = 3")

NUMBERS = {"+15550000001": ("t1", "acme"), "+15550000002": ("t2", "acme"),
           "+15550000003": ("t1", "beta")}
WINDOWS = {  # scope -> (limit, period, which calls count)
    "trunk-cps": (3, 1.0, lambda n, d: NUMBERS[n][0] == "t1"),
    "n3-out": (2, 60.0, lambda n, d: n == "+15550000003" and d == "outbound"),
}


# Mostly small values; the edges of the accepted ranges (stored exactly by every store);
# values beyond them, which the API's request model refuses before any store sees them.
PRIORITIES = st.integers(0, 2) | st.sampled_from(
    [PRIORITY_MIN, PRIORITY_MAX, PRIORITY_MIN - 1, PRIORITY_MAX + 1, 2**63, -(2**70)])
ATTEMPTS = st.integers(1, 3) | st.sampled_from([ATTEMPT_MAX, 0, ATTEMPT_MAX + 1, 2**64])


def caps(bigger: bool) -> dict[str, int]:
    return {"trunk:t1": 4 if bigger else 3, "trunk:t2": 2, "account:acme": 4, "account:beta": 2,
            "number:+15550000001": 2, "number:+15550000002": 2, "number:+15550000003": 1,
            "provider:llm": 3, "provider:llm:k1": 2, "provider:llm:k2": 2, "resource:db": 4}


@dataclass
class Held:
    number: str
    direction: str
    key: str
    expires_at: float

    def scopes(self) -> list[str]:
        trunk, account = NUMBERS[self.number]
        return [f"trunk:{trunk}", f"account:{account}", f"number:{self.number}", "resource:db",
                "provider:llm", f"provider:llm:{self.key}"]


@dataclass
class Waiting:
    call: Call
    seq: int


@dataclass
class Model:
    leases: dict[str, Held] = field(default_factory=dict)
    queued: dict[str, Waiting] = field(default_factory=dict)
    cooling: dict[str, float] = field(default_factory=dict)
    admissions: dict[str, list[float]] = field(default_factory=dict)
    bigger: bool = False

    def usage(self) -> dict[str, int]:
        counts = dict.fromkeys(caps(self.bigger), 0)
        for held in self.leases.values():
            for scope in held.scopes():
                counts[scope] += 1
        return counts


class GateMachine(RuleBasedStateMachine):
    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.stack = stack_from(STACK)
        limits = Gate.limits_for(self.stack)
        if self.kind.startswith("redis"):
            # Skip (or fail under CI) before anything is created: a temporary directory
            # left to the garbage collector is a ResourceWarning, an error in this suite.
            redis_server.require()
        self.tmp = tempfile.TemporaryDirectory()
        try:
            store: Store = make_store(self.kind, Path(self.tmp.name))(limits)
        except BaseException:
            self.tmp.cleanup()
            raise
        self.store = store
        self.gate = Gate(self.stack, store, self.clock, rng=random.Random(0))
        self.model = Model()
        self.ids = itertools.count()
        self.seq = itertools.count()

    # the model's side of an admission ---------------------------------------------
    def admitted(self, call: Call, key: str, expires_at: float, at: float) -> None:
        model = self.model
        assert model.cooling.get(key, 0.0) <= at, f"{call.call_id} got cooling key {key}"
        held = Held(call.number, call.direction, key, expires_at)
        model.leases[call.call_id] = held
        usage = model.usage()
        cap = caps(model.bigger)
        for scope in held.scopes():
            assert usage[scope] <= cap[scope], f"{scope} over its cap: {usage[scope]}"
        if call.direction == "outbound":
            account = NUMBERS[call.number][1]
            reserve = 1 if account == "acme" else 0
            assert usage[f"account:{account}"] <= cap[f"account:{account}"] - reserve
        for name, (_, _, counts) in WINDOWS.items():
            if counts(call.number, call.direction):
                model.admissions.setdefault(name, []).append(at)

    def decide(self, call: Call) -> None:
        decision = self.gate.acquire(call)
        event(f"{decision.outcome}:{decision.reason}")
        assert decision.layer is not None and decision.reason is not None
        if decision.outcome is Outcome.ADMITTED:
            assert decision.lease is not None
            ahead = [w for w in self.model.queued.values() if w.call.number == call.number
                     and w.call.priority >= call.priority and w.call.call_id != call.call_id]
            assert not ahead, f"{call.call_id} overtook {[w.call.call_id for w in ahead]}"
            self.admitted(call, decision.lease.keys["llm"], decision.lease.expires_at,
                          decision.lease.admitted_at)
        elif decision.outcome is Outcome.QUEUED:
            assert call.direction == "inbound"
            self.model.queued[call.call_id] = Waiting(call, next(self.seq))

    # rules ---------------------------------------------------------------------------
    def request(self, direction: str, number: str, priority: int = 0,
                attempt: int = 1) -> Call | None:
        """The call an API request asks for, or None when CallRequest refuses it (a 422).

        A refused request must never reach the gate; the invariant then checks that
        nothing changed.
        """
        body = {"call_id": f"c{next(self.ids)}", "direction": direction, "number": number,
                "priority": priority, "attempt": attempt}
        try:
            return CallRequest.model_validate(body).to_call()
        except ValidationError:
            event("refused by CallRequest")
            in_range = PRIORITY_MIN <= priority <= PRIORITY_MAX and 1 <= attempt <= ATTEMPT_MAX
            assert not in_range, f"in range but refused: {body}"
            return None

    @rule(number=st.sampled_from(sorted(NUMBERS)), priority=PRIORITIES)
    def inbound(self, number: str, priority: int) -> None:
        call = self.request("inbound", number, priority=priority)
        if call is not None:
            self.decide(call)

    @rule(number=st.sampled_from(sorted(NUMBERS)), attempt=ATTEMPTS)
    def outbound(self, number: str, attempt: int) -> None:
        call = self.request("outbound", number, attempt=attempt)
        if call is not None:
            self.decide(call)

    @precondition(lambda self: self.model.leases)
    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from(sorted(self.model.leases)))
        result = self.gate.renew(call_id)
        assert result.status is RenewStatus.RENEWED and result.lease is not None
        self.model.leases[call_id].expires_at = result.lease.expires_at

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        known = sorted(self.model.leases) + sorted(self.model.queued) + ["never-seen"]
        call_id = data.draw(st.sampled_from(known))
        result = self.gate.release(call_id)
        assert result.released == (call_id in self.model.leases)
        assert result.cancelled == (call_id in self.model.queued)
        self.model.leases.pop(call_id, None)
        self.model.queued.pop(call_id, None)

    @rule(seconds=st.sampled_from([0.2, 1.0, 5.0, 15.0, 35.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(key=st.sampled_from(["k1", "k2"]), retry=st.sampled_from([2.0, 10.0, 40.0]))
    def provider_429(self, key: str, retry: float) -> None:
        until = self.gate.report_provider_error("llm", key, 429, retry_after_s=retry)
        self.model.cooling[key] = until

    @precondition(lambda self: not self.model.bigger)
    @rule()
    def reload_bigger(self) -> None:
        self.gate.reload(stack_from(BIGGER))
        self.model.bigger = True

    # the judge -------------------------------------------------------------------------
    @invariant()
    def matches_model(self) -> None:
        model, now = self.model, self.clock.now
        for call_id in [c for c, h in model.leases.items() if h.expires_at <= now]:
            del model.leases[call_id]
        still_waiting: set[str] = set()
        for waiting in sorted(model.queued.values(), key=lambda w: (-w.call.priority, w.seq)):
            decision = self.gate.acquire(waiting.call)
            if decision.outcome is Outcome.ADMITTED:
                assert decision.reason is Reason.PROMOTED and decision.lease is not None
                assert waiting.call.number not in still_waiting, "promoted out of queue order"
                del model.queued[waiting.call.call_id]
                self.admitted(waiting.call, decision.lease.keys["llm"],
                              decision.lease.expires_at, decision.lease.admitted_at)
            elif decision.outcome is Outcome.REJECTED:
                assert decision.reason is Reason.QUEUE_TIMEOUT
                del model.queued[waiting.call.call_id]
            else:
                still_waiting.add(waiting.call.number)
        usage = self.gate.usage()
        store_counts = {f"{r['layer']}:{r['scope']}": r["in_use"] for r in usage["layers"]}
        assert store_counts == model.usage()
        assert sorted(e["call_id"] for e in self.gate.queue()) == sorted(model.queued)
        for name, (limit, period, _) in WINDOWS.items():
            times = sorted(model.admissions.get(name, []))
            for i, t in enumerate(times):
                inside = [u for u in times[: i + 1] if u > t - period]
                assert len(inside) <= limit, f"window {name} exceeded at {t}"

    def teardown(self) -> None:
        try:
            for call_id in list(self.model.leases) + list(self.model.queued):
                self.gate.release(call_id)
            usage = self.gate.usage()
            assert all(row["in_use"] == 0 for row in usage["layers"])
            assert usage["leases"] == 0 and self.gate.queue() == []
        finally:
            self.store.close()
            self.tmp.cleanup()


class SqliteMachine(GateMachine):
    kind = "sqlite"


class RedisMachine(GateMachine):
    kind = "redis"


class RedisClusterMachine(GateMachine):
    kind = "redis-cluster"


TestMemoryStoreAgainstModel = GateMachine.TestCase
TestSqliteStoreAgainstModel = SqliteMachine.TestCase
TestRedisStoreAgainstModel = RedisMachine.TestCase
TestRedisClusterStoreAgainstModel = RedisClusterMachine.TestCase
