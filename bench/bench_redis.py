"""The Redis store: what each operation costs Redis's one thread, and what 100,000 calls take.

    .venv/bin/python bench/bench_redis.py            # full: 100,000 leases (~5 min)
    .venv/bin/python bench/bench_redis.py --quick    # a smoke run (10,000 leases)
    .venv/bin/python bench/bench_redis.py --url redis://127.0.0.1:6379/0   # an existing server

Without ``--url`` it starts its own ``redis-server`` on a free port of 127.0.0.1 (no
persistence) and stops it at the end. Redis runs every decision of every gate of a hash
tag on one thread, so what matters is the time an operation takes *there*:

**An operation's Redis time** is the sum of ``usec_per_call x calls`` (``INFO
commandstats``) over every command the operation sends: its reads, its guarded apply,
guard retries, counted by name from ``MONITOR`` (commands a script runs are inside the
script's own time and are not counted again). It is measured for an admission, a
release and a renew of a gate on ``examples/stack.toml`` (caps raised, 9 scopes per
call) with 1,000 leases held, and compared with the **reference**: a minimal atomic
script run on the same server in the same run, taking 5 caps (HMGET, check, HINCRBY
each) and a sliding window (ZREMRANGEBYSCORE, ZCARD, ZADD). Targets: acquire <= 1.5x,
release <= 1.5x, renew <= 0.5x the reference. The reference is called the way the store
calls its own scripts (a Redis 7 function, FCALL), like with like; the same script sent
with EVALSHA is printed beside it, not used.

Like with like also in time: the operations and the reference run one call at a time,
interleaved (acquire a call, renew it, run the renew's floor on it, release it, the
reference, the reference with EVALSHA; the renew and its floor take turns going first,
since the second finds the lease in the CPU's caches), each call bracketed by ``INFO
commandstats`` (:class:`Meter`), so each is timed in the same state of Redis's caches
(cold ones: a busy Redis runs all of them faster), in 9 rounds; every figure is the median over
rounds, each ratio the median of the rounds' ratios. The renew's floor is a function
that does only what any renew moving a lease's score must (one ZMSCORE, one ZADD on
the same index): how close to 0.5x a renew can get in this measurement.

It also prints the gate side (the gate process's own CPU per decision, from
``time.process_time``), then holds 100,000 leases for real, measures the three
operations again there, and computes the share of one core that 555 admissions + 555
releases + 10,000 renews per second take: the design's scale (100,000 concurrent calls,
3-minute handle time, lease TTL 30 s renewed every 10 s). Target: under half a core (of
the commands' time, which the targets count). Redis's whole CPU for that load (``INFO
cpu``: its network and event loop too, which commandstats leaves out) is measured apart,
busy: 4 gate processes at once run the design's mix (warm caches; Redis alone on a
core, as a deployment gives it, the gates on the others, when the bench started Redis
itself), so it is not comparable call for call with the commands' time above.
Calls arrive at that rate on the bench's clock (so a rate window holds what it would),
and ended calls are forgotten 1 s after they end (not ``ended_ttl``'s 10 min), so that
forgetting them, a cost of every call, is counted too.
Last, Redis ``used_memory`` per held lease and per remembered (ended) call.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

# bench/ runs as a script: put the checkout on the path so `bench.*` imports.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from bench.bench_gate import BenchError
from bench.common import Budget, machine
from bench.stacks import roomy_raw
from callgate.config import Stack, parse_stack
from callgate.gate import Gate
from callgate.model import Call, Outcome
from callgate.stores.redis import RedisStore
from callgate.stores.redis_records import rid
from callgate.testing import FakeClock

Progress = Callable[[str], None]
FULL_LEASES = 100_000
ADMITS_PER_S, RELEASES_PER_S, RENEWS_PER_S = 555, 555, 10_000
ROUNDS = 9

REFERENCE = """
-- 5 caps and a sliding window, atomically: the least an admission can cost Redis.
-- KEYS: counters hash, window zset; ARGV: now, period, limit, member, then 5 x (field, cap)
local function reference(KEYS, ARGV)
local counts = redis.call("HMGET", KEYS[1], ARGV[5], ARGV[7], ARGV[9], ARGV[11], ARGV[13])
for i = 1, 5 do
  if tonumber(counts[i] or "0") + 1 > tonumber(ARGV[4 + 2 * i]) then return 0 end
end
redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call("ZCARD", KEYS[2]) + 1 > tonumber(ARGV[3]) then return 0 end
for i = 1, 5 do redis.call("HINCRBY", KEYS[1], ARGV[3 + 2 * i], 1) end
redis.call("ZADD", KEYS[2], ARGV[1], ARGV[4])
return 1
end
"""
REFERENCE_FUNCTION = "callgate_bench_reference"
# The least a renew that moves a lease's score in the due index can cost: one ZMSCORE (is a
# call queued? is the lease there?) and the ZADD; no record read, nothing returned.
RENEW_FLOOR = """
local function renew_floor(KEYS, ARGV)
  local scores = redis.call("ZMSCORE", KEYS[1], "!q", ARGV[1])
  if scores[1] or not scores[2] then return 0 end
  redis.call("ZADD", KEYS[1], ARGV[2], ARGV[1])
  return 1
end
"""
FLOOR_FUNCTION = "callgate_bench_renew_floor"


@contextmanager
def redis_server(url: str | None) -> Iterator[tuple[str, int | None]]:
    """``url``, or a fresh ``redis-server`` on a free port of 127.0.0.1 for the duration;
    with the process id of the server when it is the bench's own."""
    if url is not None:
        yield url, None
        return
    if shutil.which("redis-server") is None:
        raise BenchError("redis-server not found (apt-get install redis-server), or pass --url")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="callgate-bench-redis-") as tmp:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 15
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise BenchError(f"redis-server on port {port} did not start") from None
                    time.sleep(0.05)
            client.close()
            yield f"redis://127.0.0.1:{port}/0", proc.pid
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def drop(client: redis.Redis, pattern: str) -> None:
    """Delete the keys a benchmark wrote (never FLUSHDB: ``--url`` may name a used server)."""
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


class CommandCounter:
    """Top-level commands sent to Redis, by name, seen through MONITOR (scripts' own
    excluded), counted apart for each operation: ``ECHO bench-op <name>`` starts one."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self.counts: dict[str, Counter[str]] = {}
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        counting: Counter[str] = Counter()
        with self._client.monitor() as monitor:
            self._ready.set()
            while True:
                command = monitor.next_command()
                text = command["command"]
                if text.startswith("ECHO bench-monitor-stop"):
                    return
                if text.startswith("ECHO bench-op "):
                    counting = self.counts.setdefault(text.split(" ", 2)[2], Counter())
                elif command.get("client_type") != "lua":
                    counting[text.split(" ", 1)[0].lower()] += 1

    def __enter__(self) -> CommandCounter:
        self._thread.start()
        self._ready.wait(10)
        time.sleep(0.2)  # MONITOR is registered once the server has answered it
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.echo("bench-monitor-stop")
        self._thread.join(30)
        self._client.close()


IGNORED = ("config", "echo", "monitor", "info", "hello", "client", "select", "ping",
           "script", "function")


def calls_per_run(url: str, client: redis.Redis, ops: dict[str, Callable[[], None]],
                  runs: int) -> dict[str, dict[str, float]]:
    """Top-level commands one run of each of ``ops`` sends, by name, counted under MONITOR
    (which slows the server down, so nothing is timed here); ``ops`` run in turn."""
    with CommandCounter(url) as counter:
        for _ in range(runs):
            for name, op in ops.items():
                client.echo(f"bench-op {name}")
                op()
    return {name: {cmd: calls / runs for cmd, calls in counter.counts.get(name, {}).items()
                   if cmd not in IGNORED} for name in ops}


class Meter:
    """Redis's own time per operation, with operations interleaved one call at a time.

    Each run of an operation is bracketed by ``INFO commandstats``: the growth of each
    command's ``usec`` (Redis's time executing it) and ``calls`` between the two is that
    run's. Over many runs this gives each command's time per call *for that operation*,
    which times its top-level calls per run (:func:`calls_per_run`; commands a script
    runs are inside the script's time) is the operation's Redis time. Interleaving
    matters on a shared machine and for fairness: every operation, the reference too,
    runs in the same state of Redis's caches, between the same kind of neighbours.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._sums: dict[str, dict[str, list[int]]] = {}

    def _read(self) -> dict[str, tuple[int, int]]:
        stats = self._client.info("commandstats")
        return {name.removeprefix("cmdstat_"): (int(v["usec"]), int(v["calls"]))
                for name, v in stats.items()}

    def run(self, name: str, op: Callable[[], None]) -> None:
        before = self._read()
        op()
        after = self._read()
        sums = self._sums.setdefault(name, {})
        for command, (usec, calls) in after.items():
            was_usec, was_calls = before.get(command, (0, 0))
            if calls > was_calls:
                total = sums.setdefault(command, [0, 0])
                total[0] += usec - was_usec
                total[1] += calls - was_calls

    def take(self, name: str, calls: dict[str, float]) -> dict[str, float]:
        """``name``'s Redis time per run by top-level command, since the last take."""
        sums = self._sums.pop(name, {})
        shares: dict[str, float] = {}
        for command, per_run in calls.items():
            usec, count = sums.get(command, (0, 0))
            if not count:
                raise BenchError(f"no commandstats for {command} ({name})")
            shares[f"{command} x{per_run:.2f}"] = usec / count * per_run
        return shares


@dataclass
class OpTimes:
    acquire_us: float
    release_us: float
    renew_us: float
    reference_us: float
    reference_evalsha_us: float
    renew_floor_us: float  # ZMSCORE + ZADD on the due index, nothing else
    ratios: dict[str, float]  # median over rounds of each operation / the reference
    gate_cpu_us: float
    renew_cpu_us: float
    conflicts: int


class Bench:
    """One gate on one Redis with a number of leases held, and the reference script."""

    def __init__(self, url: str, stack: Stack, prefix: str, calls: str = "b",
                 start: float | None = None, gates: int = 1) -> None:
        """``calls`` names this bench's call ids; ``start`` is its clock's first reading;
        ``gates`` how many benches share the design's arrival rate."""
        self.url = url
        self.stack = stack
        self.client = redis.Redis.from_url(url)
        self.store = RedisStore.from_url(f"{url}?prefix={prefix}", Gate.limits_for(stack))
        self.clock = FakeClock() if start is None else FakeClock(start)
        self.gate = Gate(stack, self.store, self.clock)
        self.calls = calls
        self.arrival_s = gates / ADMITS_PER_S
        self.lines = list(stack.numbers)
        self.prefix = prefix
        self.count = 0
        self.held: list[str] = []
        self.last_ident = ""
        self.reference = self.client.register_script(f"{REFERENCE}\nreturn reference(KEYS, ARGV)")
        self.client.function_load(
            f"#!lua name={REFERENCE_FUNCTION}\n{REFERENCE}\n{RENEW_FLOOR}\n"
            f"redis.register_function('{REFERENCE_FUNCTION}', reference)\n"
            f"redis.register_function('{FLOOR_FUNCTION}', renew_floor)", replace=True)
        self.ref_count = 0
        self.parts: dict[str, dict[str, float]] = {}

    def admit(self) -> str:
        self.count += 1
        call_id = f"{self.calls}-{self.count:07d}"
        # Calls arrive at the design's rate (555 a second), so a rate window holds what
        # it would hold there (about 1,700 events: its 1 s period and 2 s of margin).
        self.clock.advance(self.arrival_s)
        line = self.lines[self.count % len(self.lines)]
        decision = self.gate.acquire(Call(call_id, "inbound", line))
        if decision.outcome is not Outcome.ADMITTED:
            raise BenchError(f"the benchmark call was refused: {decision}")
        self.last_ident = rid(self.gate.account_of(line), call_id)  # its id in Redis
        return call_id

    def fill(self, leases: int, progress: Progress) -> None:
        while len(self.held) < leases:
            self.held.append(self.admit())
            if len(self.held) % 20_000 == 0:
                progress(f"{len(self.held):,} leases held")

    def run_reference(self, evalsha: bool = False) -> None:
        self.ref_count += 1
        keys = [f"{{ref-{self.prefix}}}:used", f"{{ref-{self.prefix}}}:window"]
        args: list[str | int | float] = [self.clock.now, 1.0, 10**9, self.ref_count]
        for i in range(5):
            args += [f"scope-{i}", 10**9]
        if evalsha:
            done = self.reference(keys=keys, args=args)
        else:
            done = self.client.fcall(REFERENCE_FUNCTION, len(keys), *keys, *args)
        if done != 1:
            raise BenchError("the reference script refused")

    def measure(self, n: int) -> OpTimes:
        """The three operations' Redis time, the reference's, the gate's CPU per decision.

        One call at a time, interleaved (acquire a call, renew it, run the renew's floor on
        it, release it, run the reference, run it again with EVALSHA; the renew and the
        floor take turns going first), each run bracketed by the :class:`Meter`; in ROUNDS
        rounds of ``n / ROUNDS`` calls. The machine's
        speed drifts within a run (shared cores): each round's ratios compare neighbours
        in time, and every figure is the median over rounds.
        """
        # Warm the reference's window to a steady size (events of the last second).
        for _ in range(200):
            self.run_reference()
        self.run_reference(evalsha=True)  # loaded (SCRIPT LOAD) before it is timed
        current: list[str] = []
        expiry: list[float] = [0.0]

        def acquire() -> None:
            current[:] = [self.admit()]

        def renew() -> None:
            renewed = self.gate.renew(current[0])
            if renewed.lease is None:
                raise BenchError("a benchmark lease was not renewed")
            expiry[0] = renewed.lease.expires_at

        def floor() -> None:
            moved = self.client.fcall(FLOOR_FUNCTION, 1, f"{{{self.prefix}}}:due",
                                      self.last_ident,
                                      repr(expiry[0] + 0.001))
            if moved != 1:
                raise BenchError("the renew floor found no lease to move")

        def release() -> None:
            if not self.gate.release(current[0]).released:
                raise BenchError("a benchmark lease was not released")

        ops: dict[str, Callable[[], None]] = {
            "acquire": acquire, "renew": renew, "floor": floor, "release": release,
            "reference": self.run_reference, "evalsha": lambda: self.run_reference(True)}
        block = max(50, n // ROUNDS)
        calls = calls_per_run(self.url, self.client, ops, block)
        meter = Meter(self.client)
        conflicts = self.store.conflicts
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in ops}
        # The renew and its floor take turns going first: the one after the other finds
        # the lease's entries in the CPU's caches, which flatters it.
        orders = (list(ops), ["acquire", "floor", "renew", "release", "reference", "evalsha"])
        for _ in range(ROUNDS):
            for call in range(block):
                for name in orders[call % 2]:
                    meter.run(name, ops[name])
            for name in ops:
                rounds[name].append(meter.take(name, calls[name]))
        totals = {name: [sum(r.values()) for r in rs] for name, rs in rounds.items()}
        ratios = {name: median([t / ref for t, ref in zip(totals[name], totals["reference"],
                                                          strict=True)])
                  for name in ("acquire", "renew", "release", "floor")}
        self.parts = {name: {cmd: median([r[cmd] for r in rounds[name]])
                             for cmd in rounds[name][0]}
                      for name in ("acquire", "renew", "release")}
        times = {name: median(values) for name, values in totals.items()}
        # The gate's own CPU per decision (admit + release are two), without the meter.
        cpu = time.process_time()
        for _ in range(n):
            self.gate.release(self.admit())
        gate_cpu = (time.process_time() - cpu) / (2 * n) * 1e6
        cpu = time.process_time()
        for index in range(n):
            self.gate.renew(self.held[index % len(self.held)])
        renew_cpu = (time.process_time() - cpu) / n * 1e6
        return OpTimes(times["acquire"], times["release"], times["renew"], times["reference"],
                       times["evalsha"], times["floor"], ratios, gate_cpu, renew_cpu,
                       self.store.conflicts - conflicts)

    def server_cpu(self) -> float:
        """Redis's CPU time so far (every thread, user and system), in seconds."""
        cpu = self.client.info("cpu")
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def close(self) -> None:
        self.client.function_delete(REFERENCE_FUNCTION)  # the library (with the floor)
        drop(self.client, f"{{{self.prefix}}}:*")
        drop(self.client, f"{{ref-{self.prefix}}}:*")
        self.store.close()
        self.client.close()


BUSY_GATES = 4
RENEWS_PER_ADMIT = RENEWS_PER_S // ADMITS_PER_S  # 18: the design's mix


def _busy_gate(url: str, prefix: str, raw: dict[str, Any], start: float, name: str,
               held: list[str], pairs: int, ready: Any, go: Any,
               cores: set[int] | None) -> None:
    """One gate process of :func:`busy_share` (on ``cores`` if given): once every gate is
    ready, ``pairs`` times, admit and release a new call and renew 18 of ``held``."""
    if cores:
        os.sched_setaffinity(0, cores)
    bench = Bench(url, parse_stack(raw, source="bench"), prefix, calls=name, start=start,
                  gates=BUSY_GATES)
    at = 0
    ready.wait(120)
    if not go.wait(120):  # every gate set up, and Redis's CPU read
        raise BenchError("the busy measurement did not start")
    for _ in range(pairs):
        call_id = bench.admit()
        if not bench.gate.release(call_id).released:
            raise BenchError(f"a busy gate's call {call_id} was not released")
        for _ in range(RENEWS_PER_ADMIT):
            if bench.gate.renew(held[at % len(held)]).lease is None:
                raise BenchError("a busy gate's lease was not renewed")
            at += 1
    bench.store.close()  # not bench.close(): the keys are the measured bench's
    bench.client.close()


def pinned(server: int | None) -> tuple[int, set[int]] | None:
    """(Redis's core, the gates' cores) when the bench's own server can have a core to
    itself (two or more cores, Linux); None otherwise (the OS places everything)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if server is None or len(cores) < 2:
        return None
    return cores[0], set(cores[1:])


def busy_share(bench: Bench, raw: dict[str, Any], pairs: int, server: int | None) -> float:
    """Redis's whole CPU (``INFO cpu``) for the design's load, measured busy: BUSY_GATES gate
    processes at once run the design's mix (an admission, a release, 18 renews of held
    leases) ``pairs`` times each; the share of a core is Redis's CPU per design second
    (555 admissions + 555 releases + 10,000 renews). The bench's own server (process
    ``server``) has a core to itself meanwhile, as a deployment gives it, and the gates
    the others (see :func:`pinned`)."""
    placed = pinned(server)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no shared sockets
    ready, go = context.Barrier(BUSY_GATES + 1), context.Event()
    workers = [context.Process(target=_busy_gate, daemon=True, args=(
        bench.url, bench.prefix, raw, bench.clock.now, f"busy{k}",
        bench.held[k::BUSY_GATES], pairs, ready, go, placed and placed[1]))
        for k in range(BUSY_GATES)]
    was = os.sched_getaffinity(server) if placed and server else None
    try:
        if placed and server:
            os.sched_setaffinity(server, {placed[0]})
        for worker in workers:
            worker.start()
        try:
            ready.wait(120)  # each has imported callgate and set up its gate
        except threading.BrokenBarrierError:
            raise BenchError("a busy gate process did not start (see its traceback "
                             "above)") from None
        before = bench.server_cpu()
        go.set()
        for worker in workers:
            worker.join(600)
        spent = bench.server_cpu() - before
        if any(worker.exitcode != 0 for worker in workers):
            raise BenchError("a busy gate process failed or took over 10 minutes")
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        if was is not None and server:
            os.sched_setaffinity(server, was)
    return spent / (BUSY_GATES * pairs / ADMITS_PER_S)


def core_share(times: OpTimes) -> float:
    """Share of one core for 555 admits + 555 releases + 10,000 renews per second."""
    return (ADMITS_PER_S * times.acquire_us + RELEASES_PER_S * times.release_us
            + RENEWS_PER_S * times.renew_us) / 1e6


def report(label: str, t: OpTimes, parts: dict[str, dict[str, float]]) -> list[str]:
    ratio = t.ratios
    target = {"acquire": 1.5, "release": 1.5, "renew": 0.5}
    lines = [f"{label}: reference script {t.reference_us:.1f} us as a function (FCALL; "
             f"{t.reference_evalsha_us:.1f} us sent with EVALSHA)"]
    for name, value in (("acquire", t.acquire_us), ("release", t.release_us),
                        ("renew", t.renew_us)):
        met = "met" if ratio[name] <= target[name] else "NOT MET"
        lines.append(f"  {name}: {value:.1f} us of Redis -> {ratio[name]:.2f}x the reference "
                     f"(median of {ROUNDS} rounds) "
                     f"(target <= {target[name]}x): {met}")
        lines.append("      " + ", ".join(f"{cmd} {us:.1f} us" for cmd, us in parts[name].items()))
    lines.append(f"  a renew's floor (a function doing only ZMSCORE + ZADD on the due index): "
                 f"{t.renew_floor_us:.1f} us -> {ratio['floor']:.2f}x the reference")
    lines.append(f"  gate side: {t.gate_cpu_us:.0f} us of the gate process's CPU per decision "
                 f"(admit or release), {t.renew_cpu_us:.0f} us per renew")
    lines.append(f"  guard conflicts while measuring: {t.conflicts}")
    return lines


def bench_redis(budget: Budget, progress: Progress, url: str | None = None) -> list[str]:
    """Every Redis figure, as printable lines; starts a server unless ``url`` names one."""
    leases = budget.leases
    n = 500 if budget.quick else 2000
    out: list[str] = []
    with redis_server(url) as (where, server):
        raw = roomy_raw(cap=leases * 4, max_cps=10**9, lease_ttl="30d")
        # Ended calls are forgotten 1 s (of the bench's clock) after they end, not 10 min:
        # within its few seconds the bench then reaches a busy gate's steady state, where
        # calls are forgotten as fast as they end, and forgetting them is counted in the
        # operations that do it.
        raw["gate"]["ended_ttl"] = "1s"
        stack = parse_stack(raw, source="the example stack, caps raised, ended_ttl 1s")
        small = Bench(where, stack, "bench-1k")
        try:
            small.fill(1000, progress)
            out += report("1,000 leases held", small.measure(n), small.parts)
        finally:
            small.close()
        big = Bench(where, stack, "bench-100k")
        try:
            before = big.used_memory()
            start = time.perf_counter()
            big.fill(leases, progress)
            fill_s = time.perf_counter() - start
            per_lease = (big.used_memory() - before) / leases
            times = big.measure(n)
            out += report(f"{leases:,} leases held", times, big.parts)
            share = core_share(times)
            out.append(f"  555 admits + 555 releases + 10,000 renews per second: "
                       f"{share:.2f} of one Redis core (target < 0.5): "
                       f"{'met' if share < 0.5 else 'NOT MET'}")
            busy = busy_share(big, raw, 300 if budget.quick else 1000, server)
            placed = pinned(server)
            where_run = (f"Redis alone on one of this machine's {os.cpu_count()} cores, the "
                         "gates on the others" if placed else
                         f"Redis and the gates where the OS put them, {os.cpu_count()} cores")
            out.append(f"  the same load in Redis's whole CPU (INFO cpu: its network and event "
                       f"loop too), measured busy, {BUSY_GATES} gate processes at once running "
                       f"its mix ({where_run}): {busy:.2f} of a core")
            gates = ((ADMITS_PER_S + RELEASES_PER_S) * times.gate_cpu_us
                     + RENEWS_PER_S * times.renew_cpu_us) / 1e6
            out.append(f"  the gates' side of that load: {gates:.2f} cores; one hash tag "
                       f"(one Redis core) feeds about {gates / share:.0f} gate processes "
                       f"working flat out by the commands' time, {gates / busy:.0f} by Redis's "
                       "whole CPU")
            out.append(f"  filled at {leases / fill_s:,.0f} admissions/s (one gate, one "
                       "thread, round trips included)")
            out.append(f"  memory: {per_lease:,.0f} bytes of Redis used_memory per held lease")
            ended = min(leases, 20_000)
            before = big.used_memory()
            for call_id in big.held[:ended]:
                big.gate.release(call_id)
            per_ended = (big.used_memory() - before) / ended
            out.append(f"  memory: {per_lease + per_ended:,.0f} bytes per remembered (ended) "
                       f"call ({per_ended:+,.0f} vs a held lease), kept for ended_ttl")
        finally:
            big.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (10,000 leases)")
    parser.add_argument("--url", help="an existing Redis (default: start one on 127.0.0.1)")
    args = parser.parse_args(argv)
    budget = Budget.smoke() if args.quick else Budget.full()
    info = machine()
    client_version = redis.__version__
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['python']}, "
          f"redis-py {client_version}")
    for line in bench_redis(budget, lambda text: print(f"  {text}", flush=True), args.url):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
