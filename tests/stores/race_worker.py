"""What one gate process of the Redis race test does, and the log it keeps for the judge.

Each process builds its own :class:`Gate` on the shared Redis (system clock) and runs a
few threads of acquire / renew / release. For every admitted call it logs the *inner*
interval of holding, on the host-wide monotonic clock: from just after the admitted
answer to just before the release call. The true lease covers that interval, so if
inner intervals of one scope ever overlap more than its cap, the store broke the cap.
For windows it logs wall-clock bounds around each admitting call (the gate's clock);
a promoted call was admitted inside another gate's step, with that gate's clock, so
only direct admissions are judged against windows.
"""

from __future__ import annotations

import random
import threading
import time
import tomllib
from dataclasses import dataclass

from callgate.clock import system_clock
from callgate.config import parse_stack
from callgate.gate import Gate
from callgate.model import Call, Outcome, Reason

STACK = """
[gate]
lease_ttl = "60s"
poll_timeout = "30s"

[trunks.t1]
max_concurrent = 6
max_cps = 250

[plans.p]
max_concurrent = 8

[accounts.acme]
plan = "p"
reserved_inbound = 1

[numbers."+15550000001"]
account = "acme"
trunk = "t1"
max_concurrent = 3
windows = [{direction = "outbound", limit = 20, per = "1s"}]

[numbers."+15550000002"]
account = "acme"
trunk = "t1"
max_concurrent = 3

[numbers."+15550000003"]
account = "acme"
trunk = "t1"
max_concurrent = 4

[trunks.t2]
max_concurrent = 5

[accounts.beta]
plan = "p"

[numbers."+15550000004"]
account = "beta"
trunk = "t2"
max_concurrent = 4
windows = [{direction = "outbound", limit = 10, per = "1s"}]

[providers.llm]
keys = ["k1", "k2"]
sessions_per_key = 3
max_sessions = 5

[resources.db]
capacity = 4

[inbound]
queue_max = 2
max_wait = "30s"

[outbound]
jitter = "none"
max_attempts = 100
"""

NUMBERS = ("+15550000001", "+15550000002", "+15550000003")
PACED = "+15550000004"  # outbound only, no provider or resource: its window binds
CAPS = {"trunk:t1": 6, "account:acme": 8, "number:+15550000001": 3,
        "number:+15550000002": 3, "number:+15550000003": 4, "provider:llm": 5,
        "provider:llm:k1": 3, "provider:llm:k2": 3, "resource:db": 4,
        "trunk:t2": 5, "account:beta": 8, "number:+15550000004": 4}
WINDOWS = {  # name -> (limit, period_s, does this call count)
    "trunk-cps": (250, 1.0, lambda number, direction: number != PACED),
    "n1-outbound": (20, 1.0, lambda number, direction: number == NUMBERS[0]
                    and direction == "outbound"),
    "n4-outbound": (10, 1.0, lambda number, direction: number == PACED),
}


@dataclass(frozen=True)
class Held:
    """One admitted call as the worker saw it."""

    number: str
    direction: str
    key: str
    start: float  # monotonic, just after the admitted answer
    end: float  # monotonic, just before the release call
    asked: float  # wall clock, just before the admitting acquire
    answered: float  # wall clock, just after it
    promoted: bool  # admitted by another call's script, at a time only that gate knew

    def scopes(self) -> list[str]:
        if self.number == PACED:
            return ["trunk:t2", "account:beta", f"number:{PACED}"]
        return ["trunk:t1", "account:acme", f"number:{self.number}", "provider:llm",
                f"provider:llm:{self.key}", "resource:db"]


@dataclass
class Log:
    held: list[Held]
    outcomes: dict[str, int]
    errors: list[str]
    ops: int


def run(url: str, worker: int, threads: int, calls: int) -> Log:
    """Run ``threads`` x ``calls`` calls against the store at ``url``; return the log."""
    from callgate.stores import open_store

    stack = parse_stack(tomllib.loads(STACK))
    gate = Gate(stack, open_store(url, Gate.limits_for(stack)), system_clock)
    log = Log([], {}, [], 0)
    lock = threading.Lock()

    def one_thread(index: int) -> None:
        rng = random.Random(worker * 1000 + index)
        for n in range(calls):
            call_id = f"w{worker}-t{index}-{n}"
            draw = rng.random()
            if draw < 0.25:
                call = Call(call_id, "outbound", PACED, providers=(), resources={})
            else:
                direction = "inbound" if draw < 0.5 else "outbound"
                call = Call(call_id, direction, rng.choice(NUMBERS))
            try:
                held, outcome, ops = _one_call(gate, call, rng)
            except Exception as exc:  # the judge reports every error, never hides one
                with lock:
                    log.errors.append(f"{call.call_id}: {exc!r}")
                continue
            with lock:
                log.ops += ops
                log.outcomes[outcome] = log.outcomes.get(outcome, 0) + 1
                if held is not None:
                    log.held.append(held)

    workers = [threading.Thread(target=one_thread, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return log


def _one_call(gate: Gate, call: Call, rng: random.Random) -> tuple[Held | None, str, int]:
    asked = time.time()
    decision = gate.acquire(call)
    answered = time.time()
    ops = 1
    polls = 0
    # A queued caller polls (as the HTTP client does) until promoted, rejected or bored.
    while decision.outcome is Outcome.QUEUED and polls < 50:
        time.sleep(0.002)  # a caller's polling pace, not synchronisation
        asked = time.time()
        decision = gate.acquire(call)
        answered = time.time()
        polls += 1
        ops += 1
    if decision.outcome is not Outcome.ADMITTED:
        if decision.outcome is Outcome.QUEUED:
            gate.release(call.call_id)  # the caller hangs up: cancel
            ops += 1
        return None, f"{decision.outcome}:{decision.reason}", ops
    start = time.monotonic()
    assert decision.lease is not None
    if rng.random() < 0.5:
        gate.renew(call.call_id)
        ops += 1
    time.sleep(rng.uniform(0.0, 0.004))  # the call's length
    end = time.monotonic()
    result = gate.release(call.call_id)
    ops += 1
    if not result.released:
        raise AssertionError(f"{call.call_id} was admitted but release found no lease")
    held = Held(call.number, call.direction, decision.lease.keys.get("llm", ""), start, end, asked,
                answered, decision.reason is Reason.PROMOTED)
    return held, f"{decision.outcome}:{decision.reason}", ops
