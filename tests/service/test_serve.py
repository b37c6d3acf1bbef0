"""`callgate serve` as real processes: restarts keep state; two servers never break a cap."""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.service.served import running

pytestmark = pytest.mark.slow

# a restart keeps leases and queues ------------------------------------------------------
N1 = "+15550000001"

RESTART_STACK = f"""
[gate]
lease_ttl = "2m"
poll_timeout = "2m"

[trunks.t]
max_concurrent = 10

[plans.p]
max_concurrent = 10

[accounts.acme]
plan = "p"

[numbers."{N1}"]
account = "acme"
trunk = "t"
max_concurrent = 2

[inbound]
queue_max = 5
max_wait = "5m"
"""


def _acquire(http: httpx.Client, url: str, call_id: str, number: str = N1,
             direction: str = "inbound") -> dict[str, Any]:
    response = http.post(f"{url}/v1/calls", json={
        "call_id": call_id, "direction": direction, "number": number})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_a_restart_keeps_leases_and_queue_positions(tmp_path: Path) -> None:
    """SIGTERM exits 0; on restart over the same SQLite file leases renew and queues keep order."""
    config = tmp_path / "stack.toml"
    config.write_text(RESTART_STACK, encoding="utf-8")
    db, log = tmp_path / "gate.db", tmp_path / "serve.log"
    with httpx.Client(timeout=10.0) as http:
        with running(config, db, log) as first:
            admitted: list[str] = []
            queued: list[str] = []
            for i in range(10):
                answer = _acquire(http, first.url, f"call-{i}")
                if answer["decision"] == "admitted":
                    admitted.append(answer["call_id"])
                else:
                    assert answer["decision"] == "queued", answer
                    queued.append(answer["call_id"])
                    if len(queued) == 2:
                        break
            assert len(admitted) == 2 and len(queued) == 2
            assert first.stop() == 0, first.output()

        with running(config, db, log) as second:
            for call_id in admitted:
                renewed = http.post(f"{second.url}/v1/calls/{call_id}/renew")
                assert renewed.status_code == 200, renewed.text
            usage = http.get(f"{second.url}/v1/usage").json()
            assert usage["leases"] == 2
            number = next(r for r in usage["layers"] if r["scope"] == N1)
            assert (number["in_use"], number["queued"]) == (2, 2)
            positions = {c: _acquire(http, second.url, c)["queue"]["position"] for c in queued}
            assert positions == {queued[0]: 1, queued[1]: 2}

            assert http.delete(f"{second.url}/v1/calls/{admitted[0]}").json()["released"]
            promoted = _acquire(http, second.url, queued[0])
            assert (promoted["decision"], promoted["reason"]) == ("admitted", "promoted")
            assert _acquire(http, second.url, queued[1])["queue"]["position"] == 1
            assert second.stop() == 0, second.output()
    output = second.output()
    assert f"API docs: {first.url}/docs" in output and f"API docs: {second.url}/docs" in output
    assert "Traceback" not in output


# two servers, many clients: no cap is ever exceeded -----------------------------------
NUMBERS = {"+15550000011": 2, "+15550000012": 2, "+15550000013": 3}
CAPS = {
    **{f"number:{n}": cap for n, cap in NUMBERS.items()},
    "trunk:t": 4, "account:acme": 5, "provider:llm": 4,
    "provider:llm:k1": 2, "provider:llm:k2": 2,
}
SHARED_STACK = """
[gate]
lease_ttl = "1m"
poll_timeout = "10s"

[trunks.t]
max_concurrent = 4

[plans.p]
max_concurrent = 5

[accounts.acme]
plan = "p"

[providers.llm]
keys = ["k1", "k2"]
sessions_per_key = 2

[inbound]
queue_max = 10
max_wait = "20s"
""" + "".join(
    f'\n[numbers."{n}"]\naccount = "acme"\ntrunk = "t"\nmax_concurrent = {cap}\n'
    for n, cap in NUMBERS.items()
)
CLIENTS = 5
ACQUIRES = 50

Interval = tuple[list[str], float, float]


def run_client(index: int, urls: list[str], deadline: float) -> dict[str, Any]:
    """One client process: acquire, hold a few ms, release; log the inner holding intervals.

    An interval runs from just after the admitted answer arrives to just before the
    DELETE is sent, so it lies inside the real holding; more overlapping intervals in a
    scope than its cap would prove the cap was broken.
    """
    rng = random.Random(index)
    intervals: list[Interval] = []
    answers: Counter[str] = Counter()
    errors: list[str] = []
    turn = index

    def next_url() -> str:
        nonlocal turn
        turn += 1
        return urls[turn % len(urls)]

    def ask(body: dict[str, Any]) -> dict[str, Any] | None:
        response = http.post(f"{next_url()}/v1/calls", json=body)
        if response.status_code != 200:
            errors.append(f"acquire {response.status_code}: {response.text}")
            return None
        answer: dict[str, Any] = response.json()
        return answer

    with httpx.Client(timeout=15.0) as http:
        for i in range(ACQUIRES):
            if time.monotonic() > deadline:
                break
            number = rng.choice(sorted(NUMBERS))
            body = {"call_id": f"client{index}-{i}", "number": number,
                    "direction": "inbound" if (i + index) % 2 else "outbound"}
            answer = ask(body)
            poll_until = time.monotonic() + 5.0
            while answer is not None and answer["decision"] == "queued" \
                    and time.monotonic() < min(poll_until, deadline):
                time.sleep(0.005)  # a caller on hold polls
                answer = ask(body)
            if answer is None:
                continue
            answers[f"{answer['decision']}:{answer['reason']}"] += 1
            if answer["decision"] == "admitted":
                t_admit = time.monotonic()
                lease = answer["lease"]
                scopes = [f"number:{number}", "trunk:t", "account:acme", "provider:llm",
                          f"provider:llm:{lease['keys']['llm']}"]
                time.sleep(rng.uniform(0.002, 0.02))  # the call
                t_release = time.monotonic()
                done = http.delete(f"{next_url()}/v1/calls/{body['call_id']}")
                if done.status_code != 200 or not done.json()["released"]:
                    errors.append(f"release {done.status_code}: {done.text}")
                intervals.append((scopes, t_admit, t_release))
            elif answer["decision"] == "queued":  # gave up waiting: hang up
                http.delete(f"{next_url()}/v1/calls/{body['call_id']}")
    return {"intervals": intervals, "answers": dict(answers), "errors": errors}


def max_overlap(intervals: list[Interval]) -> dict[str, int]:
    """The most intervals open at one instant, per scope (an end at t closes before a start)."""
    events: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for scopes, start, end in intervals:
        for scope in scopes:
            events[scope] += [(start, 1), (end, -1)]
    peaks: dict[str, int] = {}
    for scope, changes in events.items():
        level = peak = 0
        for _, change in sorted(changes):
            level += change
            peak = max(peak, level)
        peaks[scope] = peak
    return peaks


def test_two_servers_on_one_file_never_exceed_a_cap(tmp_path: Path) -> None:
    """Two serve processes on one SQLite file, five client processes: no cap exceeded, no leak."""
    config = tmp_path / "stack.toml"
    config.write_text(SHARED_STACK, encoding="utf-8")
    db = tmp_path / "gate.db"
    with running(config, db, tmp_path / "a.log") as one, \
            running(config, db, tmp_path / "b.log") as two:
        urls = [one.url, two.url]
        deadline = time.monotonic() + 40.0
        context = multiprocessing.get_context("spawn")
        with context.Pool(CLIENTS) as pool:
            pending = pool.starmap_async(run_client, [(i, urls, deadline) for i in range(CLIENTS)])
            results = pending.get(timeout=90)
        with httpx.Client(timeout=10.0) as http:
            usage = [http.get(f"{url}/v1/usage").json() for url in urls]
            queue = [http.get(f"{url}/v1/queue").json() for url in urls]
        assert one.stop() == 0, one.output()
        assert two.stop() == 0, two.output()

    errors = [e for r in results for e in r["errors"]]
    assert errors == []
    intervals = [interval for r in results for interval in r["intervals"]]
    answers: Counter[str] = sum((Counter(r["answers"]) for r in results), Counter())
    peaks = max_overlap(intervals)
    print(f"answers: {dict(answers)}\npeaks: {peaks}")  # shown when the test fails
    assert len(intervals) >= CLIENTS * ACQUIRES // 4, answers
    assert not [key for key in answers if key.endswith("store_unavailable")], answers
    over = {scope: peak for scope, peak in peaks.items() if peak > CAPS[scope]}
    assert over == {}, f"caps exceeded: {over}"
    assert any(peaks.get(scope) == cap for scope, cap in CAPS.items()), peaks
    for document in usage:
        assert document["leases"] == 0
        assert [row for row in document["layers"] if row["in_use"] or row["queued"]] == []
    assert queue == [{"entries": []}, {"entries": []}]
