"""Memory: what 100,000 active leases cost, in RAM (memory store) and on disk (SQLite).

Then every call is released, and the same figure is taken again: what the ended calls
cost while they are remembered (``ended_ttl``; a late webhook for an ended id replays
``call_ended`` instead of admitting the call again).

Each store is filled in a fresh subprocess (``python -m bench.bench_memory KIND N``):
the gate is built and warmed up first, then N inbound calls are admitted and held, and
the figure is the growth of the process's RSS (``/proc/self/status`` VmRSS) or the
size of the SQLite file (plus WAL) after the store is closed. The stack is the example's
layers with caps raised above N, a lease TTL of 30 days so nothing expires, and a fake
clock stepping 10 ms per call (trunk CPS windows stay on, raised to 100,000/s). Here
the baseline is the target itself: the ratio is figure / target and must stay below 1.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import ROOT, Budget, Result, rss_bytes
from bench.stacks import roomy_stack

MB = 1_000_000
TARGET_RAM_MB = 150.0
TARGET_DISK_MB = 50.0
FULL_LEASES = 100_000
STEP_S = 0.01
Progress = Callable[[str], None]


def fill(kind: str, leases: int, directory: Path) -> dict[str, float]:
    """Admit and hold ``leases`` calls on a fresh ``kind`` store; what it cost."""
    from callgate.gate import Gate
    from callgate.model import Call, Outcome
    from callgate.stores import MemoryStore, SqliteStore
    from callgate.stores.base import Store
    from callgate.testing import FakeClock

    stack = roomy_stack(cap=leases + 1000, max_cps=100_000, lease_ttl="30d")
    numbers = [n for n in stack.numbers]
    path = directory / "leases.db"
    store: Store = (MemoryStore(Gate.limits_for(stack)) if kind == "memory"
                    else SqliteStore(path, Gate.limits_for(stack)))
    clock = FakeClock()
    gate = Gate(stack, store, clock)
    for number in numbers:  # warm up every code path and route, then free it again
        call_id = f"warm-{number}"
        gate.acquire(Call(call_id, "inbound", number))
        gate.release(call_id)
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    for index in range(leases):
        clock.advance(STEP_S)
        decision = gate.acquire(Call(f"lease-{index}", "inbound", numbers[index % len(numbers)]))
        if decision.outcome is not Outcome.ADMITTED:
            raise RuntimeError(f"call {index} was not admitted: {decision}")
    seconds = time.perf_counter() - started
    held = gate.usage()["leases"]
    if held != leases:
        raise RuntimeError(f"the store holds {held} leases, expected {leases}")
    gc.collect()
    after = rss_bytes()
    if kind == "sqlite":  # the file as it is left on close; reopened, leases and all
        store.close()
        store = SqliteStore(path, Gate.limits_for(stack))
        gate = Gate(stack, store, clock)
    disk = sum(p.stat().st_size for p in directory.glob("leases.db*"))
    # Then every call ends: each is remembered (answers call_ended) for ended_ttl.
    for index in range(leases):
        clock.advance(STEP_S / 10)
        if not gate.release(f"lease-{index}").released:
            raise RuntimeError(f"call {index} was not released")
    gc.collect()
    ended = rss_bytes()
    store.close()
    ended_disk = sum(p.stat().st_size for p in directory.glob("leases.db*"))
    return {"rss_delta": after - before, "rss_after": after, "seconds": seconds,
            "file_bytes": disk, "ended_rss_delta": ended - before,
            "ended_file_bytes": ended_disk}


def _child(kind: str, leases: int, timeout_s: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="callgate-mem-") as tmp:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
        done = subprocess.run(
            [sys.executable, "-m", "bench.bench_memory", kind, str(leases), tmp],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} fill failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def bench_memory(budget: Budget, progress: Progress) -> list[Result]:
    leases = budget.leases
    scale = FULL_LEASES / leases
    scaled = (f"quick run: {leases:,} leases measured, figure scaled x{scale:g} to "
              f"{FULL_LEASES:,}") if scale != 1 else f"{FULL_LEASES:,} leases measured"
    ram = _child("memory", leases, timeout_s=300)
    progress(f"memory store: {ram['rss_delta'] / MB:.1f} MB RSS for {leases:,} leases "
             f"({leases / ram['seconds']:,.0f} admits/s); {ram['rss_delta'] / leases:,.0f} "
             f"bytes per held lease, {ram['ended_rss_delta'] / leases:,.0f} per ended call "
             "remembered")
    disk = _child("sqlite", leases, timeout_s=600)
    progress(f"sqlite store: {disk['file_bytes'] / MB:.1f} MB on disk for {leases:,} leases "
             f"({leases / disk['seconds']:,.0f} admits/s); {disk['file_bytes'] / leases:,.0f} "
             f"bytes per held lease, {disk['ended_file_bytes'] / leases:,.0f} per ended call "
             "remembered")
    setup = ("example layers, caps raised, lease_ttl 30d, fake clock +10 ms per call, "
             "inbound calls over all 10 numbers; each checked admitted and held")
    return [
        Result(f"RAM for {FULL_LEASES:,} leases (memory)", "MB", ram["rss_delta"] * scale / MB,
               TARGET_RAM_MB, "target", 1.0, higher_is_better=False,
               notes=[f"RSS growth (VmRSS) of a fresh process while the memory store takes "
                      f"the leases; {scaled}; {setup}"]),
        Result(f"disk for {FULL_LEASES:,} leases (sqlite)", "MB", disk["file_bytes"] * scale / MB,
               TARGET_DISK_MB, "target", 1.0, higher_is_better=False,
               notes=[f"SQLite file + WAL after the store is closed; {scaled}; "
                      f"MB = 10^6 bytes"]),
    ]


if __name__ == "__main__":
    print(json.dumps(fill(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))))
