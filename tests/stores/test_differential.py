"""Memory, SQLite and Redis give the same answer to the same calls, step by step.

Three gates on one stack (one per store), one fake clock, and random number generators
seeded alike (so backoff jitter agrees). A Hypothesis state machine applies each
operation to all three, and after every step requires the same answer from each (the
whole decision: outcome, layer, scope, reason, lease and keys, queue position and
estimated wait, retry-after, message; or the same error) and the same usage document
and queue. Memory is the reference the others are compared with; the kernel it runs is
the one algorithm (DESIGN.md, "Stores").

The stack is small so that every layer fills: two accounts whose config order is not
their alphabetical order (lookups without an account must follow config order), shared
trunks, numbers with windows, two provider pools, a resource, reserved inbound room.
Call ids come from a small pool, so ids repeat across accounts and calls are polled,
replayed, conflict, end and come back after their tombstones.

``HYPOTHESIS_PROFILE=thorough`` runs many more and longer examples (locally); the
default is a bounded, derandomized run for CI.
"""

from __future__ import annotations

import itertools
import os
import random
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from tests.conftest import stack_from
from tests.stores import redis_server

from callgate.errors import CallConflictError
from callgate.gate import Gate
from callgate.model import Call, Direction
from callgate.stores import MemoryStore, SqliteStore
from callgate.stores.base import Store
from callgate.testing import FakeClock

ZULU_1, ZULU_2, ACME_1, ACME_2 = "+15550000001", "+15550000002", "+15550000003", "+15550000004"
NUMBERS = (ZULU_1, ZULU_2, ACME_1, ACME_2)
ACCOUNT = {ZULU_1: "zulu", ZULU_2: "zulu", ACME_1: "acme", ACME_2: "acme"}


def stack_text(t1: int = 3, t2: int = 3, zulu: int = 3, acme: int = 2, n1: int = 2,
               llm_per_key: int = 1, llm_max: int = 3, db: int = 5, mode: str = "enforce",
               n2_window: bool = True) -> str:
    """The differential stack; the arguments are what reloads change."""
    n2_windows = ('windows = [{direction = "outbound", limit = 2, per = "30s"}, '
                  '{direction = "inbound", limit = 3, per = "30s"}]' if n2_window else "")
    return f"""
[gate]
lease_ttl = "20s"
max_call_duration = "90s"
poll_timeout = "15s"
tombstone_ttl = "10s"
ended_ttl = "40s"
mode = "{mode}"

[trunks.t1]
max_concurrent = {t1}
max_cps = 2

[trunks.t2]
max_concurrent = {t2}

[plans.big]
max_concurrent = {zulu}

[plans.small]
max_concurrent = {acme}

[accounts.zulu]
plan = "big"
reserved_inbound = 1
windows = [{{direction = "outbound", limit = 3, per = "20s"}}]

[accounts.acme]
plan = "small"

[numbers."{ZULU_1}"]
account = "zulu"
trunk = "t1"
max_concurrent = {n1}

[numbers."{ZULU_2}"]
account = "zulu"
trunk = "t2"
max_concurrent = 2
{n2_windows}

[numbers."{ACME_1}"]
account = "acme"
trunk = "t1"
max_concurrent = 1

[numbers."{ACME_2}"]
account = "acme"
trunk = "t2"
max_concurrent = 2

[providers.llm]
keys = ["k1", "k2", "k3"]
sessions_per_key = {llm_per_key}
max_sessions = {llm_max}
cooldown = "12s"

[providers.tts]
keys = ["v1", "v2"]
sessions_per_key = 2
required = false
windows = [{{limit = 3, per = "10s"}}]

[resources.db]
capacity = {db}

[inbound]
queue_max = 2
max_wait = "40s"
handle_time = "1m"
retry_after = "30s"

[outbound]
retry_base = "2s"
retry_max = "20s"
jitter = "full"
max_attempts = 3
"""


STACKS = {
    "base": stack_text(),
    "tight": stack_text(t1=2, t2=2, zulu=2, acme=1, n1=1, llm_max=2, db=3),
    "roomy": stack_text(t1=5, t2=4, zulu=5, acme=3, n1=3, llm_per_key=2, llm_max=5, db=8),
    "shadow": stack_text(mode="shadow"),
    "no-window": stack_text(n2_window=False),
}

RECENT = 6
IDS = ("a", "b", "x")  # shared by both accounts: the same id lives in each
ADVANCE = st.sampled_from([0.0, 0.0, 0.0, 0.5, 1.0, 4.0, 9.5, 16.0])
JUMPS = st.sampled_from([0.25, 2.0, 10.0, 15.0, 20.0, 30.0, 41.0, 95.0])
PROVIDERS: tuple[tuple[str, ...] | None, ...] = (None, None, None, ("llm", "tts"), ("tts",), ())

DIFFERENTIAL = {
    "ci": settings(max_examples=50, stateful_step_count=50, derandomize=True, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow], database=None),
    "thorough": settings(max_examples=400, stateful_step_count=120, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow]),
}
STEPS = itertools.count()  # operations compared in this process (the thorough run reports)


def _answer(op: Callable[[Gate], Any], gate: Gate) -> Any:
    """What ``op`` returns on ``gate``, or the error it raises, as a comparable value."""
    try:
        return op(gate)
    except CallConflictError as exc:
        return ("CallConflictError", str(exc))


class Differential(RuleBasedStateMachine):
    """The same operations on a memory, a SQLite and a Redis gate; every answer must agree."""

    def __init__(self, directory: Path, redis_url: str) -> None:
        super().__init__()
        self.clock = FakeClock()
        stack = stack_from(STACKS["base"])
        limits = Gate.limits_for(stack)
        self.directory = Path(tempfile.mkdtemp(dir=directory))
        stores: dict[str, Store] = {
            "memory": MemoryStore(limits),
            "sqlite": SqliteStore(self.directory / "gate.db", limits),
            "redis": _redis_store(redis_url, limits),
        }
        self.stores = stores
        self.gates = {kind: Gate(stack, store, self.clock, rng=random.Random(7))
                      for kind, store in stores.items()}
        # (account, id) -> the call last sent, most recent last: picks favour live calls
        self.calls: dict[tuple[str, str], Call] = {}
        self.fresh = itertools.count()

    # one step on every gate --------------------------------------------------------------
    def each(self, what: str, op: Callable[[Gate], Any], step: bool = True) -> Any:
        """``op`` on every gate; every answer must equal memory's. ``step``: count it."""
        if step:
            next(STEPS)
        answers = {kind: _answer(op, gate) for kind, gate in self.gates.items()}
        reference = answers["memory"]
        for kind, answer in answers.items():
            assert answer == reference, (
                f"{what} at t={self.clock.now - FakeClock().now:g}: {kind} differs from "
                f"memory\n  memory: {reference!r}\n  {kind}: {answer!r}")
        return reference

    def send(self, call: Call, advance: float, ttl_s: float | None) -> None:
        self.clock.advance(advance)
        answer = self.each(f"acquire {call!r} ttl_s={ttl_s}",
                           lambda gate: gate.acquire(call, ttl_s=ttl_s))
        if not isinstance(answer, tuple):  # a conflict keeps the call first sent
            ident = (ACCOUNT[call.number], call.call_id)
            self.calls.pop(ident, None)
            self.calls[ident] = call

    # rules ---------------------------------------------------------------------------------
    @rule(advance=ADVANCE, fresh=st.sampled_from([False, False, True]), pooled=st.sampled_from(IDS),
          number=st.sampled_from(NUMBERS), direction=st.sampled_from(["inbound", "outbound"]),
          priority=st.integers(0, 2), providers=st.sampled_from(PROVIDERS),
          db=st.sampled_from([None, None, 2]), ttl_s=st.sampled_from([None, None, 5.0, 45.0]))
    def acquire(self, advance: float, fresh: bool, pooled: str, number: str,
                direction: Direction, priority: int, providers: tuple[str, ...] | None,
                db: int | None, ttl_s: float | None) -> None:
        call_id = f"n{next(self.fresh)}" if fresh else pooled
        resources = None if db is None else {"db": db}
        call = Call(call_id, direction, number, priority=priority, providers=providers,
                    resources=resources)
        self.send(call, advance, ttl_s)

    @precondition(lambda self: self.calls)
    @rule(advance=ADVANCE, data=st.data(), direction=st.sampled_from(["inbound", "outbound"]),
          second=st.booleans())
    def twin(self, advance: float, data: st.DataObject, direction: Direction,
             second: bool) -> None:
        """A recent call's id, sent on a number of the other account: one id, two records."""
        account, call_id = data.draw(st.sampled_from(self.recent()))
        numbers = [n for n in NUMBERS if ACCOUNT[n] != account]
        self.send(Call(call_id, direction, numbers[second]), advance, None)

    @precondition(lambda self: self.calls)
    @rule(advance=ADVANCE, data=st.data(), retry=st.booleans(),
          ttl_s=st.sampled_from([None, None, 5.0]))
    def poll(self, advance: float, data: st.DataObject, retry: bool, ttl_s: float | None) -> None:
        """The same call again: a queued caller's poll, an outbound retry, a replay."""
        call = self.calls[data.draw(st.sampled_from(self.recent()))]
        if retry and call.direction == "outbound":
            call = Call(call.call_id, call.direction, call.number, priority=call.priority,
                        attempt=call.attempt + 1, providers=call.providers,
                        resources=call.resources)
        self.send(call, advance, ttl_s)

    @rule(advance=ADVANCE, data=st.data(), named=st.booleans(),
          ttl_s=st.sampled_from([None, None, 8.0, 60.0]))
    def renew(self, advance: float, data: st.DataObject, named: bool,
              ttl_s: float | None) -> None:
        account, call_id = self.pick(data)
        self.clock.advance(advance)
        account = account if named else None
        self.each(f"renew {call_id} account={account} ttl_s={ttl_s}",
                  lambda gate: gate.renew(call_id, account=account, ttl_s=ttl_s))

    @rule(advance=ADVANCE, data=st.data(), named=st.booleans())
    def release(self, advance: float, data: st.DataObject, named: bool) -> None:
        account, call_id = self.pick(data)
        self.clock.advance(advance)
        account = account if named else None
        self.each(f"release {call_id} account={account}",
                  lambda gate: gate.release(call_id, account=account))

    @rule(seconds=JUMPS)
    def jump(self, seconds: float) -> None:
        """Time passes with no call: leases, queue entries and tombstones fall due."""
        self.clock.advance(seconds)
        next(STEPS)

    @rule()
    def reaper(self) -> None:
        self.each("expire", lambda gate: gate.expire())

    @rule(pool=st.sampled_from([("llm", "k1"), ("llm", "k2"), ("llm", "k3"), ("tts", "v1")]),
          status=st.sampled_from([429, 429, 503, 401]),
          retry=st.sampled_from([None, 3.0, 25.0]))
    def provider_error(self, pool: tuple[str, str], status: int, retry: float | None) -> None:
        provider, key = pool
        self.each(f"report {provider}:{key} {status} retry_after_s={retry}",
                  lambda gate: gate.report_provider_error(provider, key, status, retry))

    @rule(name=st.sampled_from(sorted(STACKS)))
    def reload(self, name: str) -> None:
        stack = stack_from(STACKS[name])
        self.each(f"reload {name}", lambda gate: gate.reload(stack))

    def recent(self) -> list[tuple[str, str]]:
        """The (account, id) of the last few calls sent: the ones most likely still held."""
        return list(self.calls)[-RECENT:]

    def pick(self, data: st.DataObject) -> tuple[str, str]:
        """A call this test sent lately (any account), or an id no store has seen."""
        return data.draw(st.sampled_from([*self.recent(), ("zulu", "never-seen")]))

    # the judge -----------------------------------------------------------------------------
    @invariant()
    def same_usage_and_queue(self) -> None:
        usage = self.each("usage", lambda gate: gate.usage(), step=False)
        if any(row["queued"] for row in usage["layers"]):  # else every queue is empty
            self.each("queue", lambda gate: gate.queue(), step=False)

    def teardown(self) -> None:
        for store in self.stores.values():
            store.close()
        for path in sorted(self.directory.iterdir()):
            path.unlink()
        self.directory.rmdir()


def _redis_store(url: str, limits: Any) -> Store:
    from callgate.stores.redis import RedisStore

    # A hash tag of its own: every example starts empty (not from ``random``, which
    # Hypothesis seeds alike for every example). A long timeout: on a busy machine the
    # default 0.5 s would turn a slow reply into store_unavailable on Redis alone.
    return RedisStore.from_url(f"{url}?prefix=d{secrets.token_hex(8)}&timeout=10", limits)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A temporary directory for the SQLite files, made only once Redis is known to run."""
    redis_server.require()  # skip (or fail under CI) before anything is created
    with tempfile.TemporaryDirectory(prefix="callgate-differential-") as name:
        yield Path(name)


def test_memory_sqlite_and_redis_give_identical_answers(scratch: Path) -> None:
    """Every random sequence of operations gets the same answers and usage on every store."""
    url = redis_server.shared_url()
    profile = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    before = next(STEPS)
    run_state_machine_as_test(lambda: Differential(scratch, url),
                              settings=DIFFERENTIAL.get(profile, DIFFERENTIAL["ci"]))
    steps = next(STEPS) - before - 1
    print(f"differential ({profile}): {steps} operations, each followed by usage")  # pytest -s
    assert steps > 0
