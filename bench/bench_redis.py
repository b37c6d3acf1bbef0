"""The Redis store: decisions per second against raw EVALSHA and ``limits``, and its memory.

    .venv/bin/python bench/bench_redis.py            # full (~1 min on 2 cores)
    .venv/bin/python bench/bench_redis.py --quick    # a smoke run, figures rougher
    .venv/bin/python bench/bench_redis.py --url redis://127.0.0.1:6379/0   # an existing server

Without ``--url`` it starts its own ``redis-server`` on a free port of 127.0.0.1 (no
persistence) and stops it at the end. Every figure is a ratio to a baseline timed in
the same run, in interleaved rounds (see :mod:`bench.common`):

1. **admit+release** (``gate.acquire`` of an inbound call on ``examples/stack.toml``,
   admitted, then ``gate.release``: two decisions, two EVALSHA round trips) against the
   same count of raw redis-py EVALSHA calls of scripts of the same size: callgate's own
   acquire and release scripts, called with ready-made arguments and their replies
   left undecoded. The ratio is what the gate and store add in Python on top of the
   round trips they cannot avoid. Target >= 0.8x. For scale, a note gives the rate of
   two EVALSHA of scripts padded to the same size that do only the writes (+1 on each
   scope, a window event, the record; then -1 and delete) without any of the policy.
2. the same admit+release against ``limits`` (``RedisStorage`` on the same server,
   ``MovingWindowRateLimiter``): one ``hit()`` per scope, as separate calls. ``limits``
   is not atomic across layers (a call can take a trunk slot and then be refused by the
   number) and has no leases, so it does nothing on release. Target: callgate >= 2x.
3. Redis ``used_memory`` growth with 100,000 active leases held through the gate on the
   example's layers (caps raised), against a 64 MB target.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# bench/ runs as a script: put the checkout on the path so `bench.*` imports.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from bench.bench_gate import BenchError, GateSide, claim_scopes
from bench.common import Budget, Result, compare, machine
from bench.stacks import example_stack, roomy_stack, trunk_lines
from callgate.clock import system_clock
from callgate.config import Stack
from callgate.gate import Gate
from callgate.model import Call, Outcome
from callgate.stores.redis import RedisStore, claim_json, script_sources
from callgate.testing import FakeClock

Progress = Callable[[str], None]
MB = 1_000_000
TARGET_MEMORY_MB = 64.0
FULL_LEASES = 100_000

RAW_ADMIT = """
-- The writes of an admission without the policy: +1 per scope, a window event, a record.
for i = 3, #ARGV do redis.call("HINCRBY", KEYS[1], ARGV[i], 1) end
redis.call("ZADD", KEYS[2], ARGV[1], ARGV[1])
redis.call("SET", KEYS[3], ARGV[2])
return {"admitted", 0, 0, ARGV[2], {}}
"""
RAW_RELEASE = """
-- The writes of a release without the policy: -1 per scope, the record deleted.
local text = redis.call("GET", KEYS[3])
for i = 3, #ARGV do redis.call("HINCRBY", KEYS[1], ARGV[i], -1) end
redis.call("DEL", KEYS[3])
return {1, 0}
"""


def padded(text: str, size: int) -> str:
    """``text`` with a trailing comment so that it is ``size`` bytes long (when shorter)."""
    missing = size - len(text.encode()) - 4
    return text + ("\n-- " + "x" * missing if missing > 0 else "")


class SameScripts:
    """callgate's acquire and release scripts through raw redis-py: arguments made in advance."""

    def __init__(self, url: str, stack: Stack, lines: list[str], step_s: float) -> None:
        self.client = redis.Redis.from_url(url)
        store = RedisStore.from_url(f"{url}?prefix=bench-same", Gate.limits_for(stack))
        gate = Gate(stack, store, FakeClock())
        tag, digest = "{bench-same}:", store.digest("{bench-same}:")
        sources = script_sources()
        self.acquire = self.client.script_load(sources["acquire"])
        self.release = self.client.script_load(sources["release"])
        self.head = [f"{tag}limits", tag, digest]
        probes = [gate.claim_for(Call("@ID@", "inbound", line)) for line in lines]
        self.claims = [claim_json(claim).split("@ID@") for claim in probes]
        self.account = [claim.account for claim in probes]
        self.clock = FakeClock()
        self.step_s = step_s
        self.count = 0
        store.close()

    def run(self, n: int) -> None:
        evalsha, head, claims, accounts = self.client.evalsha, self.head, self.claims, self.account
        for _ in range(n):
            self.count += 1
            index = self.count % len(claims)
            call_id = f"same-{self.count}"
            now = repr(self.clock.advance(self.step_s))
            reply = evalsha(self.acquire, 1, *head, now, call_id.join(claims[index]))
            if reply[0] != b"admitted":
                raise BenchError(f"the raw acquire was refused: {reply[:3]}")
            evalsha(self.release, 1, *head, now, call_id, accounts[index])


class RawSide:
    """Two EVALSHA round trips per iteration, carrying the same claim, without the policy."""

    def __init__(self, client: redis.Redis, gate: Gate, lines: list[str]) -> None:
        size = len(script_sources()["acquire"].encode())
        self.admit = client.register_script(padded(RAW_ADMIT, size))
        self.release = client.register_script(padded(RAW_RELEASE, size))
        self.claims = [gate.claim_for(Call("raw", "inbound", line)) for line in lines]
        self.keys = ["{raw}:used", "{raw}:window", "{raw}:record"]
        self.count = 0

    def run(self, n: int) -> None:
        admit, release, claims, keys = self.admit, self.release, self.claims, self.keys
        for _ in range(n):
            self.count += 1
            claim = claims[self.count % len(claims)]
            scopes = claim_scopes(claim)
            admit(keys=keys, args=[self.count, claim_json(claim), *scopes])
            release(keys=keys, args=[self.count, "", *scopes])


class LimitsSide:
    """``limits`` on Redis: one moving-window ``hit()`` per scope (caps as cap per second)."""

    def __init__(self, url: str, items: list[list[tuple[RateLimitItem, str]]]) -> None:
        self.limiter = MovingWindowRateLimiter(RedisStorage(url))
        self.items = items
        self.count = 0

    def run(self, n: int) -> None:
        hit, items = self.limiter.hit, self.items
        for _ in range(n):
            self.count += 1
            for item, scope in items[self.count % len(items)]:
                if not hit(item, scope):
                    raise BenchError(f"limits refused a benchmark hit on {scope}")


@contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    """``url``, or a fresh ``redis-server`` on a free port of 127.0.0.1 for the duration."""
    if url is not None:
        yield url
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
            yield f"redis://127.0.0.1:{port}/0"
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


def server_time_us(client: redis.Redis, side: GateSide, iterations: int) -> float:
    """Redis's own time per callgate decision (EVALSHA), from ``INFO commandstats``."""

    def totals() -> tuple[int, int]:
        stats = client.info("commandstats").get("cmdstat_evalsha", {})
        return int(stats.get("calls", 0)), int(stats.get("usec", 0))

    calls, usec = totals()
    side.run(iterations)
    calls_after, usec_after = totals()
    return (usec_after - usec) / max(1, calls_after - calls)


def _limits_items(gate: Gate, lines: list[str]) -> list[list[tuple[RateLimitItem, str]]]:
    limits = Gate.limits_for(gate.stack)
    rows = []
    for line in lines:
        row: list[tuple[RateLimitItem, str]] = []
        for scope in claim_scopes(gate.claim_for(Call("probe", "inbound", line))):
            # limits runs on the wall clock: give every scope room so no hit is refused.
            amount = limits.caps.get(scope) or limits.windows[scope][0]
            row.append((RateLimitItemPerSecond(max(amount, 10**6)), f"limits:{scope}"))
        rows.append(row)
    return rows


def bench_speed(url: str, budget: Budget, progress: Progress) -> list[Result]:
    stack = example_stack()
    lines, step = trunk_lines(stack)
    store = RedisStore.from_url(f"{url}?prefix=bench-speed", Gate.limits_for(stack))
    side = GateSide(stack, store, lines, step)
    client = redis.Redis.from_url(url)
    same = SameScripts(url, stack, lines, step)
    raw = RawSide(client, side.gate, lines)
    lim = LimitsSide(url, _limits_items(side.gate, lines))
    try:
        rates = compare([("callgate", side), ("same", same), ("raw", raw), ("limits", lim)],
                        budget.rounds, budget.round_s, progress)
        per_decision_us = server_time_us(client, side, 1000 if budget.quick else 4000)
    finally:
        for pattern in ("{bench-speed}:*", "{bench-same}:*", "{raw}:*", "LIMITS:*"):
            drop(client, pattern)
        store.close()
        client.close()
        same.client.close()
    best = {name: max(r) for name, r in rates.items()}
    scopes = len(claim_scopes(side.gate.claim_for(Call("probe", "inbound", lines[0]))))
    setup = (f"examples/stack.toml unchanged on one Redis (local, no persistence); inbound "
             f"calls over {len(lines)} lines, fake clock +{step:g} s per call; {scopes} "
             "scopes per call; every call checked admitted")
    rounds = f"best of {budget.rounds} interleaved rounds of {budget.round_s:g} s"
    return [
        Result("redis store admit+release", "ops/s", best["callgate"], best["same"],
               "2 raw EVALSHA, same scripts", 0.8,
               notes=[setup, rounds, "raw: redis-py evalsha() of callgate's acquire and "
                      "release scripts with arguments made in advance, replies not decoded",
                      f"for scale: two EVALSHA of scripts padded to the same size doing only "
                      f"the writes (HINCRBY +1 per scope, ZADD, SET; then -1 and DEL): "
                      f"{best['raw']:,.0f}/s; callgate's policy in Lua costs the difference",
                      f"one slot: Redis spends {per_decision_us:.0f} us of its one thread per "
                      f"decision (INFO commandstats), so one hash tag carries about "
                      f"{1e6 / per_decision_us:,.0f} decisions/s"],
               rounds={"callgate": rates["callgate"], "same": rates["same"]}),
        Result("redis store admit+release", "ops/s", best["callgate"], best["limits"],
               "limits (moving window, Redis)", 2.0,
               notes=[f"limits: RedisStorage on the same server, MovingWindowRateLimiter, "
                      f"one hit() per scope ({scopes} calls per admission), wall clock with "
                      "room to spare; limits is NOT atomic across layers and has no leases: "
                      "it does the admit hits only, nothing on release"],
               rounds={"callgate": rates["callgate"], "limits": rates["limits"]}),
    ]


def bench_leases(url: str, budget: Budget, progress: Progress) -> list[Result]:
    leases = budget.leases
    stack = roomy_stack(cap=leases * 2, max_cps=10**9, lease_ttl="30d")
    lines = list(stack.numbers)
    store = RedisStore.from_url(f"{url}?prefix=bench-leases", Gate.limits_for(stack))
    gate = Gate(stack, store, system_clock)
    client = redis.Redis.from_url(url)
    try:
        gate.acquire(Call("warm-up", "inbound", lines[0]))
        gate.release("warm-up")
        before = int(client.info("memory")["used_memory"])
        start = time.perf_counter()
        for i in range(leases):
            decision = gate.acquire(Call(f"lease-{i:06d}", "inbound", lines[i % len(lines)]))
            if decision.outcome is not Outcome.ADMITTED:
                raise BenchError(f"the lease benchmark was refused: {decision}")
            if i and i % 20_000 == 0:
                progress(f"{i:,} leases held")
        fill_s = time.perf_counter() - start
        grown = int(client.info("memory")["used_memory"]) - before
        held = store.usage(system_clock()).leases
        if held != leases:
            raise BenchError(f"expected {leases} leases held, Redis has {held}")
    finally:
        drop(client, "{bench-leases}:*")
        store.close()
        client.close()
    per_lease = grown / leases
    figure = per_lease * FULL_LEASES / MB
    notes = [f"{leases:,} leases held through the gate ({fill_s:.1f} s, "
             f"{leases / fill_s:,.0f} admissions/s single client); {per_lease:,.0f} bytes "
             "per lease (record, expiry index entry, its share of counters and windows)",
             "example layers, caps raised; lease TTL 30 days so nothing expires"]
    if leases != FULL_LEASES:
        notes.append(f"scaled to {FULL_LEASES:,} leases from {leases:,}")
    return [Result("redis used_memory, 100,000 leases", "MB", figure, TARGET_MEMORY_MB,
                   "target", 1.0, higher_is_better=False, notes=notes)]


def bench_redis(budget: Budget, progress: Progress, url: str | None = None) -> list[Result]:
    """Every Redis figure; starts a server unless ``url`` names one."""
    with redis_server(url) as where:
        return bench_speed(where, budget, progress) + bench_leases(where, budget, progress)


def _line(result: Result) -> str:
    unit = result.unit
    ratio = result.ratio
    met = {True: "met", False: "NOT MET", None: "-"}[result.met]
    return (f"{result.name}: callgate {result.callgate:,.1f} {unit} vs "
            f"{result.baseline_name} {result.baseline:,.1f} {unit} -> ratio "
            f"{ratio:.2f}x (target {result.target_text}): {met}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (10,000 leases)")
    parser.add_argument("--url", help="an existing Redis (default: start one on 127.0.0.1)")
    args = parser.parse_args(argv)
    budget = Budget.smoke() if args.quick else Budget.full()
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['python']}, "
          f"redis-py {redis.__version__}")
    results = bench_redis(budget, lambda text: print(f"  {text}", flush=True), args.url)
    for result in results:
        print(_line(result))
        for note in result.notes:
            print(f"    {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
