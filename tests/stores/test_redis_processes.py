"""The Redis store under real processes: a race of four gates, a killed gate, a Redis outage.

Each test judges by its own record (an interval log, its own counts), never by the
store's ``usage()`` alone, and waits for real processes by polling with a deadline.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from tests.closing import closing
from tests.conftest import stack_from
from tests.gate.stacks import BASE, N1, N2
from tests.stores import race_worker
from tests.stores.redis_server import RedisServer

from callgate.clock import system_clock
from callgate.errors import StoreError
from callgate.gate import Gate
from callgate.model import Call, Layer, Outcome, Reason
from callgate.stores import open_store
from callgate.testing import FakeClock

pytestmark = pytest.mark.slow


def poll(check: Callable[[], bool], what: str, timeout_s: float, every_s: float = 0.05) -> float:
    """Seconds until ``check()`` held; fails the test after ``timeout_s``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"{what}: not within {timeout_s} s")
        time.sleep(every_s)
    return time.monotonic() - start


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t closes before a start at t)."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    most = now = 0
    for _, delta in events:
        now += delta
        most = max(most, now)
    return most


def window_breaches(events: list[tuple[float, float]], limit: int, period: float) -> int:
    """Sets of limit + 1 admissions that surely fell within less than one period.

    ``events`` are (asked, answered) wall-clock bounds of each admitting call; an
    admission surely lies in [asked, answered].
    """
    ordered = sorted(events)
    breaches = 0
    for i, (first, _) in enumerate(ordered):
        inside = [e for e in ordered[i:] if e[1] < first + period]
        breaches += len(inside) > limit
    return breaches


def _race_process(url: str, worker: int, barrier: Any, results: Any) -> None:
    barrier.wait(timeout=120)
    results.put(race_worker.run(url, worker, threads=4, calls=130))


def test_four_gate_processes_never_exceed_a_cap_or_a_window(store_url: str) -> None:
    """4 processes x 4 threads racing on one Redis: no scope over its cap, no window exceeded."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_race_process, args=(store_url, w, barrier, results))
             for w in range(4)]
    for proc in procs:
        proc.start()
    logs = [results.get(timeout=150) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert [log.errors for log in logs] == [[], [], [], []]
    held = [h for log in logs for h in log.held]
    outcomes = sum((Counter(log.outcomes) for log in logs), Counter())
    assert sum(log.ops for log in logs) >= 2000, outcomes
    assert len(held) > 200 and len(outcomes) > 2, outcomes  # admitted, and blocked in ways
    for scope, cap in race_worker.CAPS.items():
        intervals = [(h.start, h.end) for h in held if scope in h.scopes()]
        assert max_overlap(intervals) <= cap, scope
    for name, (limit, period, counts) in race_worker.WINDOWS.items():
        events = [(h.asked, h.answered) for h in held
                  if counts(h.number, h.direction) and not h.promoted]
        assert window_breaches(events, limit, period) == 0, name
    stack = stack_from(race_worker.STACK)
    judge = Gate(stack, closing(open_store(store_url, Gate.limits_for(stack))), system_clock)
    usage = judge.usage()
    assert [r for r in usage["layers"] if r["in_use"]] == [] and usage["leases"] == 0
    assert judge.queue() == []


HOLDER = """
import sys, time
from callgate.clock import system_clock
from callgate.config import parse_stack
from callgate.gate import Gate
from callgate.model import Call
from callgate.stores import open_store
import tomllib
stack = parse_stack(tomllib.loads(sys.argv[2]))
gate = Gate(stack, open_store(sys.argv[1], Gate.limits_for(stack)), system_clock)
for i, number in enumerate(["+15550000001", "+15550000001", "+15550000002"]):
    assert gate.acquire(Call(f"held-{i}", "outbound", number)).admitted
deadline = time.monotonic() + 120  # never outlive a broken test
while time.monotonic() < deadline:
    time.sleep(0.5)  # a heartbeat every ttl / 4
    for i in range(3):
        gate.renew(f"held-{i}")
"""


def test_a_killed_gates_slots_are_free_within_one_ttl(store_url: str) -> None:
    """A gate process killed with SIGKILL leaks its slots for at most one TTL (2 s here)."""
    text = BASE.replace('lease_ttl = "30s"', 'lease_ttl = "2s"')
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, store_url, text],
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        stack = stack_from(text)
        observer = Gate(stack, closing(open_store(store_url, Gate.limits_for(stack))),
                        system_clock)

        def leases() -> int:
            return int(observer.usage()["leases"])

        poll(lambda: leases() == 3, "the holder's three leases", timeout_s=30)
        renewed_until = time.monotonic() + 2 * 2.0  # two TTLs: alive only if renewed
        poll(lambda: leases() != 3 or time.monotonic() > renewed_until, "two TTLs", 10)
        assert leases() == 3, "a renewed lease expired"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        freed_after = poll(lambda: leases() == 0, "slots freed after SIGKILL", 2.0 + 10)
        usage = observer.usage()
        assert all(row["in_use"] == 0 for row in usage["layers"])
        assert freed_after <= 2.0 + 10
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)


def test_redis_outage_gives_explicit_decisions_and_recovers(own_server: RedisServer) -> None:
    """With Redis stopped mid-load every acquire is an explicit decision; after restart, normal."""
    stack = stack_from(BASE.replace("[plans.small]\nmax_concurrent = 3",
                                    "[plans.small]\nmax_concurrent = 9"))
    store = closing(open_store(f"{own_server.url}?timeout=0.2", Gate.limits_for(stack)))
    gate = Gate(stack, store, FakeClock())
    seen: list[tuple[str, Outcome, Reason, Layer | None]] = []
    raised: list[BaseException] = []
    phase = ["before"]
    stop = threading.Event()
    lock = threading.Lock()

    def load(worker: int) -> None:
        for n in range(100_000):
            if stop.is_set():
                return
            call = Call(f"w{worker}-{n}", "outbound", (N1, N2)[n % 2])
            try:
                decision = gate.acquire(call)
            except BaseException as exc:  # acquire must never raise: recorded and failed below
                raised.append(exc)
                return
            with lock:
                seen.append((phase[0], decision.outcome, decision.reason, decision.layer))
            if decision.admitted:
                # release may raise while the store is down; acquire may not
                with contextlib.suppress(StoreError):
                    gate.release(call.call_id)

    def count(what: str, outcome: Outcome) -> int:
        with lock:
            return sum(1 for p, o, _, _ in seen if p == what and o is outcome)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    try:
        poll(lambda: count("before", Outcome.ADMITTED) >= 50, "admissions before", 20)
        with lock:
            phase[0] = "down"
        own_server.stop()
        poll(lambda: count("down", Outcome.REJECTED) >= 50, "decisions while down", 20)
        with lock:
            phase[0] = "restarting"
        own_server.start()
        with lock:
            phase[0] = "after"
        poll(lambda: count("after", Outcome.ADMITTED) >= 50, "admissions after restart", 20)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert raised == []
    down = [(o, r, layer) for p, o, r, layer in seen if p == "down"]
    unavailable = (Outcome.REJECTED, Reason.STORE_UNAVAILABLE, Layer.STORE)
    assert all(d == unavailable or d[0] is not Outcome.REJECTED for d in down)
    assert down.count(unavailable) >= 50
    after = [r for p, _, r, _ in seen if p == "after"]
    assert Reason.STORE_UNAVAILABLE not in after[-20:] and len(after) >= 50
