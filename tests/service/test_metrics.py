"""GET /metrics: gauges read from the store follow the calls; counters count what edges answered."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
import re
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from callgate.config import Stack, parse_stack
from callgate.gate import Gate
from callgate.model import Call
from callgate.service.app import create_app
from callgate.service.logs import JsonFormatter
from callgate.stores import SqliteStore
from callgate.testing import FakeClock, memory_gate, serving

pytestmark = pytest.mark.anyio

NUMBERS = ["+14155550100", "+14155550101", "+14155550102"]
DASHBOARD = Path(__file__).parents[2] / "examples" / "grafana-dashboard.json"

STACK = """
[gate]
lease_ttl = "30s"
store = "memory://"
poll_timeout = "1h"

[trunks.t]
max_concurrent = 10

[plans.basic]
max_concurrent = 5

[accounts.acme]
plan = "basic"

[providers.llm]
keys = ["key-a", "key-b"]
sessions_per_key = 3
cooldown = "20s"

[inbound]
queue_max = 2
max_wait = "1h"
""" + "".join(f'\n[numbers."{n}"]\naccount = "acme"\ntrunk = "t"\nmax_concurrent = 2\n'
              for n in NUMBERS)




def make_stack(text: str = STACK) -> Stack:
    return parse_stack(tomllib.loads(text))




Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def decide(http: httpx.AsyncClient, call_id: str, number: str) -> str:
    body = {"call_id": call_id, "direction": "inbound", "number": number}
    response = await http.post("/v1/calls", json=body)
    assert response.status_code == 200, response.text
    outcome: str = response.json()["decision"]
    return outcome


@dataclass
class Ledger:
    """The test's own record of who holds a line and who waits, from the answers alone."""

    held: dict[str, set[str]] = field(default_factory=lambda: {n: set() for n in NUMBERS})
    waiting: dict[str, list[str]] = field(default_factory=lambda: {n: [] for n in NUMBERS})

    def number_of(self, call_id: str) -> str:
        return call_id.split("_")[0]


async def test_gauges_follow_calls_as_they_come_and_go() -> None:
    """Scraped in-use, queue and lease gauges equal the test's own count after every step."""
    rng = random.Random(7)
    ledger = Ledger()
    gate = memory_gate(make_stack(), FakeClock())
    async with serving(create_app(gate)) as http:
        for step in range(120):
            held = [c for calls in ledger.held.values() for c in calls]
            if held and rng.random() < 0.45:
                call_id = rng.choice(sorted(held))
                number = ledger.number_of(call_id)
                released = (await http.delete(f"/v1/calls/{call_id}")).json()
                assert released["released"]
                ledger.held[number].discard(call_id)
            elif any(ledger.waiting.values()) and rng.random() < 0.15:
                number = rng.choice([n for n in NUMBERS if ledger.waiting[n]])
                call_id = ledger.waiting[number].pop(rng.randrange(len(ledger.waiting[number])))
                assert (await http.delete(f"/v1/calls/{call_id}")).json()["cancelled"]
            else:
                number = rng.choice(NUMBERS)
                call_id = f"{number}_{step}"
                outcome = await decide(http, call_id, number)
                if outcome == "admitted":
                    ledger.held[number].add(call_id)
                elif outcome == "queued":
                    ledger.waiting[number].append(call_id)
            for number, waiting in ledger.waiting.items():  # callers on hold poll again
                for call_id in list(waiting):
                    if await decide(http, call_id, number) == "admitted":
                        waiting.remove(call_id)
                        ledger.held[number].add(call_id)
            samples = await scrape(http)
            total = 0
            for number in NUMBERS:
                total += len(ledger.held[number])
                assert value(samples, "callgate_slots_in_use", layer="number", scope=number,
                             account="acme") == len(ledger.held[number]), step
                assert value(samples, "callgate_queue_length", number=number,
                             account="acme") == len(ledger.waiting[number]), step
            assert value(samples, "callgate_slots_in_use", layer="account", scope="acme",
                         account="acme") == total
            assert value(samples, "callgate_leases") == total
            keys = sum(value(samples, "callgate_slots_in_use", layer="provider",
                             scope=f"llm:{k}", account="") or 0 for k in ("key-a", "key-b"))
            assert keys == total
        assert value(samples, "callgate_slots_cap", layer="account", scope="acme",
                     account="acme") == 5
        assert value(samples, "callgate_store_up") == 1


async def test_decisions_and_queue_waits_are_counted_once_per_call() -> None:
    """Decisions count by outcome, layer and reason; polls apart; waits end promoted/abandoned."""
    clock = FakeClock()
    gate = memory_gate(make_stack(), clock)
    n = NUMBERS[0]
    async with serving(create_app(gate)) as http:
        for call_id in ("a", "b"):
            assert await decide(http, call_id, n) == "admitted"
        assert await decide(http, "c", n) == "queued"
        assert await decide(http, "d", n) == "queued"
        assert await decide(http, "e", n) == "rejected"  # queue_max = 2
        clock.advance(4)
        assert await decide(http, "c", n) == "queued"  # a poll
        clock.advance(8)
        await http.delete("/v1/calls/a")
        assert await decide(http, "c", n) == "admitted"  # promoted after 12 s
        clock.advance(3)
        await http.delete("/v1/calls/d")  # hung up after 15 s on hold
        samples = await scrape(http)
    assert value(samples, "callgate_decisions_total", outcome="admitted", layer="number",
                 reason="admitted") == 2
    assert value(samples, "callgate_decisions_total", outcome="queued", layer="number",
                 reason="capacity") == 2
    assert value(samples, "callgate_decisions_total", outcome="rejected", layer="number",
                 reason="queue_full") == 1
    assert value(samples, "callgate_decisions_total", outcome="admitted", layer="queue",
                 reason="promoted") == 1
    assert value(samples, "callgate_queue_polls_total") == 1
    assert value(samples, "callgate_queue_wait_seconds_count", outcome="promoted") == 1
    assert value(samples, "callgate_queue_wait_seconds_sum", outcome="promoted") == 12
    assert value(samples, "callgate_queue_wait_seconds_bucket", outcome="promoted",
                 le="10.0") == 0
    assert value(samples, "callgate_queue_wait_seconds_bucket", outcome="promoted",
                 le="20.0") == 1
    assert value(samples, "callgate_queue_wait_seconds_sum", outcome="abandoned") == 15


async def test_a_caller_who_stops_polling_is_counted_abandoned_at_the_next_scrape() -> None:
    """A held call not polled within poll_timeout ends its wait as abandoned (at its last poll)."""
    clock = FakeClock()
    gate = memory_gate(make_stack(STACK.replace('poll_timeout = "1h"', 'poll_timeout = "30s"')),
                       clock)
    n = NUMBERS[0]
    async with serving(create_app(gate)) as http:
        await decide(http, "a", n)
        await decide(http, "b", n)
        assert await decide(http, "c", n) == "queued"
        clock.advance(10)
        await decide(http, "c", n)
        clock.advance(31)
        samples = await scrape(http)
    assert value(samples, "callgate_queue_wait_seconds_sum", outcome="abandoned") == 10
    assert value(samples, "callgate_queue_length", number=n, account="acme") == 0


async def test_provider_cooldowns_are_counted_and_cooling_keys_gauged() -> None:
    """A 429 counts a cooldown and shows one key cooling until it ends; a 401 counts disabled."""
    clock = FakeClock()
    gate = memory_gate(make_stack(), clock)
    async with serving(create_app(gate)) as http:
        await http.post("/v1/providers/llm/keys/key-a/errors", json={"status": 429})
        samples = await scrape(http)
        assert value(samples, "callgate_provider_cooldowns_total", provider="llm", key="key-a",
                     kind="cooldown") == 1
        assert value(samples, "callgate_provider_keys_cooling", provider="llm") == 1
        clock.advance(21)
        assert value(await scrape(http), "callgate_provider_keys_cooling", provider="llm") == 0
        await http.post("/v1/providers/llm/keys/key-b/errors", json={"status": 401})
        samples = await scrape(http)
    assert value(samples, "callgate_provider_cooldowns_total", provider="llm", key="key-b",
                 kind="disabled") == 1
    assert value(samples, "callgate_provider_keys_cooling", provider="llm") == 1
    assert value(samples, "callgate_provider_key_disabled", provider="llm", key="key-b") == 1
    assert value(samples, "callgate_provider_key_disabled", provider="llm", key="key-a") == 0


async def test_the_reaper_counts_leases_that_expired(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each lease that expires (a worker that never released) is counted, by the reaper too."""
    clock = FakeClock()
    gate = memory_gate(make_stack(), clock)
    for i, number in enumerate(NUMBERS):
        gate.acquire(Call(f"c{i}", "inbound", number))
    clock.advance(31)
    real_expire = gate.expire
    reaped = threading.Event()

    def expire() -> int:
        expired = real_expire()
        if expired:
            reaped.set()
        return expired

    monkeypatch.setattr(gate, "expire", expire)
    async with serving(create_app(gate, reaper_interval_s=0.01)) as http:
        # The reaper runs on the wall clock in a worker thread: wait for it, bounded.
        assert await asyncio.to_thread(reaped.wait, 10)
        deadline = time.monotonic() + 10
        samples = await scrape(http)
        while value(samples, "callgate_lease_expiries_total") != 3:  # the reaper counts next
            assert time.monotonic() < deadline, samples
            await asyncio.sleep(0.01)
            samples = await scrape(http)
    assert value(samples, "callgate_leases") == 0


async def test_store_errors_are_counted_and_store_up_drops(tmp_path: Path) -> None:
    """A closed store counts errors per source and reports callgate_store_up 0."""
    stack = make_stack()
    store = SqliteStore(tmp_path / "g.db", Gate.limits_for(stack))
    gate = Gate(stack, store, FakeClock())
    async with serving(create_app(gate)) as http:
        store.close()
        assert (await http.get("/v1/usage")).status_code == 503
        assert await decide(http, "a", NUMBERS[0]) == "rejected"
        samples = await scrape(http)
    assert value(samples, "callgate_store_up") == 0
    for source in ("request", "decision", "scrape"):
        assert value(samples, "callgate_store_errors_total", source=source) == 1, source


async def test_each_app_has_its_own_registry() -> None:
    """Two apps in one process never mix their counts."""
    one, two = memory_gate(make_stack(), FakeClock()), memory_gate(make_stack(), FakeClock())
    async with serving(create_app(one)) as first, serving(create_app(two)) as second:
        await decide(first, "a", NUMBERS[0])
        labels = {"outcome": "admitted", "layer": "number", "reason": "admitted"}
        assert value(await scrape(first), "callgate_decisions_total", **labels) == 1
        assert value(await scrape(second), "callgate_decisions_total", **labels) is None


async def test_each_decision_is_one_json_log_line() -> None:
    """The callgate.decisions logger writes one JSON object per decision with its fields."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("callgate.decisions")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        gate = memory_gate(make_stack(), FakeClock())
        async with serving(create_app(gate)) as http:
            for call_id in ("a", "b", "c", "c"):  # the last is a poll: DEBUG, not logged
                await decide(http, call_id, NUMBERS[0])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(d["call_id"], d["outcome"]) for d in lines] == [
        ("a", "admitted"), ("b", "admitted"), ("c", "queued")]
    queued = lines[2]
    assert {k: queued[k] for k in ("account", "number", "layer", "scope", "reason", "edge",
                                   "position", "level", "logger")} == {
        "account": "acme", "number": NUMBERS[0], "layer": "number", "scope": NUMBERS[0],
        "reason": "capacity", "edge": "api", "position": 1, "level": "info",
        "logger": "callgate.decisions"}
    assert lines[0]["keys"] == {"llm": "key-a"}


async def test_the_grafana_dashboard_uses_only_metrics_the_app_exposes() -> None:
    """Every callgate_* name in the dashboard's queries is in a real scrape."""
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    used = {name for q in queries for name in re.findall(r"callgate_[a-z_]+", q)}
    gate = memory_gate(make_stack(), FakeClock())
    async with serving(create_app(gate)) as http:
        await decide(http, "a", NUMBERS[0])
        await http.post("/v1/providers/llm/keys/key-a/errors", json={"status": 429})
        gate.acquire(Call("x", "inbound", NUMBERS[1]))
        exposed = {name for name, _ in await scrape(http)}
        text = (await http.get("/metrics")).text
    families = set(re.findall(r"^# TYPE (callgate_[a-z_]+)", text, flags=re.MULTILINE))
    missing = {n for n in used if n not in exposed
               and re.sub(r"_(bucket|count|sum)$", "", n) not in families}
    assert used and missing == set()
