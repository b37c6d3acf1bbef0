"""Admit + release, in process: callgate's memory and SQLite stores against baselines.

One iteration is what a call costs the gate in its life when it fits: ``gate.acquire``
of an inbound call on the example stack (admitted), then ``gate.release``. The stack is
``examples/stack.toml`` unchanged: each call takes a trunk, number, account and ``db``
slot, a key and the pool slot of ``openai-realtime`` and of ``deepgram``, and counts in
its trunk's CPS window. A fake clock moves forward between calls so the 5/s window is
exercised but never fills; every decision is checked to be an admission.

Baselines, timed in the same run:

- the floor (:mod:`bench.floor`): a dict of counters over the same scopes, one lock;
- ``limits`` (moving window, in memory): one ``hit()`` per scope, on the same virtual
  clock; it is not atomic across scopes and has no leases, so it does no release;
- SQLite: two ``BEGIN IMMEDIATE`` transactions of one UPDATE each, same PRAGMAs.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from bench.common import Budget, Result, compare
from bench.floor import Floor
from bench.stacks import example_stack, trunk_lines
from callgate.config import Stack
from callgate.gate import Gate
from callgate.model import Call, Outcome
from callgate.stores import MemoryStore, SqliteStore
from callgate.stores.base import Claim, Store
from callgate.stores.sqlite import PRAGMAS
from callgate.testing import FakeClock

Progress = Callable[[str], None]


class BenchError(RuntimeError):
    """A side of a benchmark did not do the work it claims (e.g. a call was refused)."""


def claim_scopes(claim: Claim) -> tuple[str, ...]:
    """Every scope one admitted call counts in: slots, each pool and its first key, windows."""
    keys = [slot.key for slot in claim.slots]
    for group in claim.groups:
        keys += [group.pool_key, group.key_slot(group.keys[0])]
    return (*keys, *claim.windows)


class GateSide:
    """callgate: acquire (must be admitted) then release, one call after another."""

    def __init__(self, stack: Stack, store: Store, lines: list[str], step_s: float) -> None:
        self.clock = FakeClock()
        self.gate = Gate(stack, store, self.clock)
        self.lines = lines
        self.step_s = step_s
        self.count = 0

    def run(self, n: int) -> None:
        gate, clock, lines, step = self.gate, self.clock, self.lines, self.step_s
        for _ in range(n):
            self.count += 1
            call_id = f"bench-{self.count}"
            clock.advance(step)
            decision = gate.acquire(Call(call_id, "inbound", lines[self.count % len(lines)]))
            if decision.outcome is not Outcome.ADMITTED:
                raise BenchError(f"callgate refused a benchmark call: {decision}")
            if not gate.release(call_id).released:
                raise BenchError(f"callgate did not release {call_id}")


class FloorSide:
    def __init__(self, caps: dict[str, int], scopes: list[tuple[str, ...]]) -> None:
        self.floor = Floor(caps)
        self.scopes = scopes
        self.count = 0

    def run(self, n: int) -> None:
        floor, scopes = self.floor, self.scopes
        for _ in range(n):
            self.count += 1
            call_id = f"bench-{self.count}"
            if not floor.acquire(call_id, scopes[self.count % len(scopes)]):
                raise BenchError("the floor refused a benchmark call")
            if not floor.release(call_id):
                raise BenchError(f"the floor did not release {call_id}")


class LimitsSide:
    """``limits``: one moving-window ``hit()`` per scope; each cap becomes ``cap`` per second."""

    def __init__(self, items: list[list[tuple[RateLimitItem, str]]], step_s: float) -> None:
        self.clock = FakeClock()
        self.storage = MemoryStorage()
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.items = items
        self.step_s = step_s
        self.count = 0

    def run(self, n: int) -> None:
        hit, clock, items, step = self.limiter.hit, self.clock, self.items, self.step_s
        for _ in range(n):
            self.count += 1
            clock.advance(step)
            for item, scope in items[self.count % len(items)]:
                if not hit(item, scope):
                    raise BenchError(f"limits refused a benchmark hit on {scope}")


@contextlib.contextmanager
def limits_on(clock: FakeClock) -> Iterator[bool]:
    """Run ``limits``' memory storage on ``clock``; yields False if it cannot be redirected."""
    import limits.storage.memory as memory

    original = getattr(memory, "time", None)
    if original is None or not hasattr(original, "time"):
        yield False
        return
    setattr(memory, "time", SimpleNamespace(time=clock))  # noqa: B010  (not re-exported)
    try:
        yield True
    finally:
        setattr(memory, "time", original)  # noqa: B010


class TwoTransactions:
    """SQLite baseline: +1 and -1 on one row, each its own ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, timeout=2.0, isolation_level=None,
                                  check_same_thread=False)
        for pragma in PRAGMAS:
            self.db.execute(pragma)
        self.db.execute("CREATE TABLE slots (key TEXT PRIMARY KEY, in_use INTEGER NOT NULL) "
                        "WITHOUT ROWID")
        self.db.execute("INSERT INTO slots VALUES ('trunk:bench', 0)")

    def run(self, n: int) -> None:
        execute = self.db.execute
        for _ in range(n):
            for delta in (1, -1):
                execute("BEGIN IMMEDIATE")
                execute("UPDATE slots SET in_use = in_use + ? WHERE key = 'trunk:bench'",
                        (delta,))
                execute("COMMIT")

    def close(self) -> None:
        self.db.close()


def _floor_and_limits(stack: Stack, gate: Gate, lines: list[str]) -> tuple[
        FloorSide, list[list[tuple[RateLimitItem, str]]], int]:
    limits = Gate.limits_for(stack)
    per_line = [claim_scopes(gate.claim_for(Call("probe", "inbound", line))) for line in lines]
    caps = {**limits.caps, **{key: limit for key, (limit, _) in limits.windows.items()}}
    items = []
    for scopes in per_line:
        row: list[tuple[RateLimitItem, str]] = []
        for scope in scopes:
            if scope in limits.windows:
                limit, period = limits.windows[scope]
                row.append((RateLimitItemPerSecond(limit, max(1, round(period))), scope))
            else:
                row.append((RateLimitItemPerSecond(limits.caps[scope]), scope))
        items.append(row)
    sizes = {len(s) for s in per_line}
    if len(sizes) != 1:
        raise BenchError(f"benchmark lines touch different numbers of scopes: {sizes}")
    return FloorSide(caps, per_line), items, sizes.pop()


def bench_memory_store(budget: Budget, progress: Progress) -> list[Result]:
    stack = example_stack()
    lines, step = trunk_lines(stack)
    side = GateSide(stack, MemoryStore(Gate.limits_for(stack)), lines, step)
    floor, items, scopes = _floor_and_limits(stack, side.gate, lines)
    lim = LimitsSide(items, step)
    with limits_on(lim.clock) as virtual:
        if not virtual:
            # Unknown limits internals: run it on the wall clock with room to spare.
            lim.items = [[(RateLimitItemPerSecond(10**9), s) for _, s in row] for row in items]
        rates = compare([("callgate", side), ("floor", floor), ("limits", lim)],
                        budget.rounds, budget.round_s, progress)
    best = {name: max(r) for name, r in rates.items()}
    setup = (f"examples/stack.toml unchanged; inbound calls over {len(lines)} lines of one "
             f"trunk, fake clock +{step:g} s per call (the {1 / step + 1:g}/s trunk window "
             f"is exercised, never full); {scopes} scopes per call "
             "(4 slots, 2 pools + chosen key, 1 window); every call checked admitted")
    rounds = f"best of {budget.rounds} interleaved rounds of {budget.round_s:g} s"
    limits_note = ("limits: one MovingWindowRateLimiter.hit() per scope on MemoryStorage, "
                   "each cap as cap/second, windows as configured, on the same virtual clock"
                   if virtual else "limits: wall clock, limits 1e9/s (internals unknown)")
    return [
        Result("memory store admit+release", "ops/s", best["callgate"], best["floor"],
               "floor: dict counters + lock", 0.25,
               notes=[setup, rounds,
                      f"floor: check-and-increment over the same {scopes} scopes + lease dict, "
                      "then the reverse, under one threading.Lock"],
               rounds={"callgate": rates["callgate"], "floor": rates["floor"]}),
        Result("memory store admit+release", "ops/s", best["callgate"], best["limits"],
               "limits (moving window, memory)", 2.0,
               notes=[limits_note, "limits is not atomic across layers and has no leases: "
                      "it does the admit hits only, nothing on release"],
               rounds={"callgate": rates["callgate"], "limits": rates["limits"]}),
    ]


def bench_sqlite_store(budget: Budget, progress: Progress) -> list[Result]:
    stack = example_stack()
    lines, step = trunk_lines(stack)
    with tempfile.TemporaryDirectory(prefix="callgate-bench-") as tmp:
        store = SqliteStore(Path(tmp) / "gate.db", Gate.limits_for(stack))
        side = GateSide(stack, store, lines, step)
        baseline = TwoTransactions(Path(tmp) / "floor.db")
        try:
            rates = compare([("callgate", side), ("sqlite", baseline)],
                            budget.rounds, budget.sqlite_round_s, progress)
        finally:
            store.close()
            baseline.close()
    best = {name: max(r) for name, r in rates.items()}
    return [Result(
        "sqlite store admit+release", "ops/s", best["callgate"], best["sqlite"],
        "2 x BEGIN IMMEDIATE + 1 UPDATE", 0.5,
        notes=["sqlite: same gate and calls as the memory benchmark on SqliteStore in a temp "
               "file; baseline: two BEGIN IMMEDIATE / UPDATE / COMMIT per iteration on a "
               "file with the same PRAGMAs (WAL, synchronous=NORMAL)",
               f"best of {budget.rounds} interleaved rounds of {budget.sqlite_round_s:g} s"],
        rounds=rates,
    )]


def profile(kind: str, iterations: int, top: int = 10) -> str:
    """cProfile's top functions (by own time) of ``iterations`` admit+release on ``kind``."""
    stack = example_stack()
    lines, step = trunk_lines(stack)
    with tempfile.TemporaryDirectory(prefix="callgate-prof-") as tmp:
        store: Store = (MemoryStore(Gate.limits_for(stack)) if kind == "memory"
                        else SqliteStore(Path(tmp) / "gate.db", Gate.limits_for(stack)))
        side = GateSide(stack, store, lines, step)
        side.run(100)
        profiler = cProfile.Profile()
        profiler.enable()
        side.run(iterations)
        profiler.disable()
        store.close()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()
