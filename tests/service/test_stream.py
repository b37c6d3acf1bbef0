"""The live stream behind the headroom page, and the page's public files (in-process)."""

from __future__ import annotations

import json
import logging
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import FastAPI

from callgate.config import Stack, parse_stack
from callgate.errors import StoreError
from callgate.gate import Gate
from callgate.service.app import create_app
from callgate.service.auth import digest
from callgate.service.dashboard import ASSETS, read_asset
from callgate.service.logs import MaskQueryTokens
from callgate.service.metrics import Metrics
from callgate.service.stream import STREAM_PATH, SharedRead
from callgate.stores import SqliteStore
from callgate.testing import FakeClock, memory_gate, serving

pytestmark = pytest.mark.anyio

A1 = "+14155550100"  # acme
G1 = "+14155550200"  # globex
ACME, GLOBEX, ADMIN = "acme-token", "globex-token", "admin-token"

STACK = f"""
[gate]
store = "memory://"

[trunks.t]
max_concurrent = 10

[plans.basic]
max_concurrent = 5

[accounts.acme]
plan = "basic"

[accounts.globex]
plan = "basic"

[numbers."{A1}"]
account = "acme"
trunk = "t"
max_concurrent = 1
windows = [{{ direction = "outbound", limit = 5, per = "1m" }}]

[numbers."{G1}"]
account = "globex"
trunk = "t"
max_concurrent = 1

[inbound]
queue_max = 5
"""

TOKENS = f"""
[[api.tokens]]
name = "acme-page"
account = "acme"
sha256 = "{digest(ACME)}"

[[api.tokens]]
name = "globex-page"
account = "globex"
sha256 = "{digest(GLOBEX)}"

[[api.tokens]]
name = "ops"
admin = true
sha256 = "{digest(ADMIN)}"
"""


def make_stack(text: str = STACK) -> Stack:
    return parse_stack(tomllib.loads(text))


@dataclass
class Streamed:
    """What one request to the app sent back (status, headers, body)."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)

    def events(self) -> list[dict[str, Any]]:
        """The data of every complete ``usage`` event."""
        found = []
        for block in self.body.decode().split("\n\n"):
            lines = block.split("\n")
            if "event: usage" in lines:
                found.append(json.loads(lines[lines.index("event: usage") + 1][len("data: "):]))
        return found


async def stream(app: FastAPI, *, query: str = "", headers: dict[str, str] | None = None,
                 events: int = 1, then: str = "disconnect") -> Streamed:
    """GET the stream as a raw ASGI client until ``events`` arrived, then end it.

    ``then`` is "disconnect" (the client goes away) or "close" (the server drains:
    ``app.state.streams.close()``). Bounded: a stream that does not end fails the test.
    """
    out = Streamed()
    enough = anyio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await enough.wait()
        if then == "close":
            await anyio.sleep_forever()  # the client stays: only the server can end it
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out.status = message["status"]
            out.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            out.body += message.get("body", b"")
            if len(out.events()) >= events and not enough.is_set():
                enough.set()
                if then == "close":
                    app.state.streams.close()

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": "GET", "scheme": "http", "path": STREAM_PATH,
        "raw_path": STREAM_PATH.encode(), "root_path": "", "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 123), "server": ("callgate.test", 80),
    }
    with anyio.fail_after(10):
        await app(scope, receive, send)
    return out


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_stream_carries_usage_queue_store_and_counters() -> None:
    """One event holds the usage document, the queue, the store's state and the process's tally."""
    gate = memory_gate(make_stack(), FakeClock())
    app = create_app(gate, stream_interval_s=0.01)
    async with serving(app) as http:
        for call_id in ("c1", "c2"):
            body = {"call_id": call_id, "direction": "inbound", "number": A1}
            assert (await http.post("/v1/calls", json=body)).status_code == 200
        got = await stream(app)
    assert got.status == 200
    assert got.headers["content-type"].startswith("text/event-stream")
    assert got.headers["cache-control"] == "no-store"
    assert got.body.startswith(b"retry: ")
    event = got.events()[0]
    assert event["usage"] == gate.usage()
    assert [(e["call_id"], e["position"]) for e in event["queue"]["entries"]] == [("c2", 1)]
    assert event["queue"]["total"] == 1
    assert event["store"] == {"up": True, "error": None}
    assert event["account"] is None
    assert event["process"]["totals"]["by_outcome"] == {
        "admitted": 1, "queued": 1, "retry_later": 0, "rejected": 0}
    assert event["process"]["totals"]["refused_by_layer"] == {"number": 1}


async def test_events_keep_coming_and_follow_the_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each event is read afresh: a release between two events shows in the second."""
    monkeypatch.setattr(SharedRead, "READ_SHARE", 0.0)  # every interval reads, however slow
    gate = memory_gate(make_stack(), FakeClock())
    app = create_app(gate, stream_interval_s=0.01)
    async with serving(app) as http:
        await http.post("/v1/calls", json={"call_id": "c", "direction": "inbound", "number": A1})
        read_usage = gate.usage
        reads = 0

        def usage() -> dict[str, Any]:  # the call ends right after the first event's read
            nonlocal reads
            reads += 1
            document = read_usage()
            if reads == 1:
                assert gate.release("c").released
            return document

        gate.usage = usage  # type: ignore[method-assign]
        got = await stream(app, events=2)
    in_use = [next(r["in_use"] for r in e["usage"]["layers"] if r["scope"] == A1)
              for e in got.events()[:2]]
    assert in_use == [1, 0]


async def test_streams_opened_within_one_interval_share_one_store_read() -> None:
    """Many open pages cost one usage read per interval, not one each."""
    gate = memory_gate(make_stack(), FakeClock())
    read_usage = gate.usage
    reads = 0

    def usage() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return read_usage()

    gate.usage = usage  # type: ignore[method-assign]
    app = create_app(gate, stream_interval_s=600.0)
    async with serving(app):
        first = (await stream(app)).events()[0]
        second = (await stream(app)).events()[0]
    assert reads == 1
    assert first["usage"] == second["usage"]


async def test_a_slow_read_is_shared_for_ten_times_as_long() -> None:
    """A read that took 0.5 s is reused for 5 s: the page never keeps the store busy."""
    gate = memory_gate(make_stack(), FakeClock())
    wall = FakeClock(start=0.0)
    read_usage = gate.usage
    reads = 0

    def slow_usage() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        wall.advance(0.5)
        return read_usage()

    gate.usage = slow_usage  # type: ignore[method-assign]
    shared = SharedRead(gate, Metrics(gate), interval_s=1.0, monotonic=wall)
    await shared.read()
    for _ in range(4):
        wall.advance(1.0)
        await shared.read()
    assert (reads, wall.now) == (1, 4.5)
    wall.advance(1.0)
    await shared.read()
    assert reads == 2


async def test_a_failed_read_is_retried_the_next_interval(tmp_path: Path) -> None:
    """A read that failed slowly (a busy timeout) is not kept: the next interval reads again."""
    stack = make_stack()
    store = SqliteStore(tmp_path / "g.db", Gate.limits_for(stack))
    gate = Gate(stack, store, FakeClock())
    wall = FakeClock(start=0.0)
    real_usage = gate.usage
    down = True

    def usage() -> dict[str, Any]:
        wall.advance(2.0)  # the busy timeout, or the answer after it
        if down:
            raise StoreError("database is locked")
        return real_usage()

    gate.usage = usage  # type: ignore[method-assign]
    shared = SharedRead(gate, Metrics(gate), interval_s=1.0, monotonic=wall)
    assert (await shared.read())[2] == {"up": False, "error": "database is locked"}
    down = False
    wall.advance(1.0)
    assert (await shared.read())[2] == {"up": True, "error": None}


async def test_a_client_going_away_ends_its_stream_at_once() -> None:
    """A disconnect ends the stream mid-wait (here a 10-minute interval), not at the next tick."""
    app = create_app(memory_gate(make_stack(), FakeClock()), stream_interval_s=600.0)
    async with serving(app):
        got = await stream(app, then="disconnect")  # fails after 10 s if it waited
    assert got.status == 200 and len(got.events()) == 1
    assert not app.state.streams.closing


async def test_a_closed_switch_ends_open_streams_cleanly() -> None:
    """EventStreams.close() (what SIGTERM calls) ends a stream whose client is still there."""
    app = create_app(memory_gate(make_stack(), FakeClock()), stream_interval_s=0.01)
    async with serving(app):
        got = await stream(app, then="close")
    assert got.status == 200 and len(got.events()) >= 1
    assert app.state.streams.closing


async def test_a_store_that_cannot_be_read_is_shown_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the store down an event says so (usage null) and the stream goes on."""
    monkeypatch.setattr(SharedRead, "READ_SHARE", 0.0)  # every interval reads, however slow
    stack = make_stack()
    store = SqliteStore(tmp_path / "g.db", Gate.limits_for(stack))
    app = create_app(Gate(stack, store, FakeClock()), stream_interval_s=0.01)
    async with serving(app) as http:
        store.close()
        got = await stream(app, events=2)
        metrics = (await http.get("/metrics")).text
    first, second = got.events()[:2]
    assert first["usage"] is None and first["queue"] == {"total": 0, "entries": []}
    assert first["store"]["up"] is False and first["store"]["error"]
    assert second["store"]["up"] is False
    assert 'callgate_store_errors_total{source="stream"} 2.0' in metrics


# tokens ---------------------------------------------------------------------------------
@pytest.fixture
def tokened() -> tuple[FastAPI, Gate]:
    gate = memory_gate(make_stack(STACK + TOKENS), FakeClock())
    return create_app(gate, stream_interval_s=0.01), gate


async def test_the_stream_needs_a_token_when_the_api_has_tokens(
    tokened: tuple[FastAPI, Gate],
) -> None:
    """No token, a wrong one in the header or in ?token=: 401, and nothing streamed."""
    app, _ = tokened
    async with serving(app):
        for query, headers in [("", {}), ("", bearer("guess")), ("token=guess", {}),
                               ("token=", {})]:
            got = await stream(app, query=query, headers=headers)
            assert got.status == 401, (query, headers)
            assert got.headers["www-authenticate"].startswith("Bearer")
            assert got.events() == []


async def test_a_token_may_come_in_the_header_or_the_query(
    tokened: tuple[FastAPI, Gate],
) -> None:
    """The admin token works as Authorization: Bearer and as ?token= (for EventSource)."""
    app, gate = tokened
    async with serving(app):
        by_header = (await stream(app, headers=bearer(ADMIN))).events()[0]
        by_query = (await stream(app, query=f"token={ADMIN}")).events()[0]
    assert by_header["usage"] == by_query["usage"] == gate.usage()
    assert by_header["account"] is None


async def test_only_the_stream_takes_a_token_in_the_query(tokened: tuple[FastAPI, Gate]) -> None:
    """?token= is refused on every other route: tokens in URLs are kept to the one place."""
    app, _ = tokened
    async with serving(app) as http:
        assert (await http.get(f"/v1/usage?token={ADMIN}")).status_code == 401
        assert (await http.get("/v1/usage", headers=bearer(ADMIN))).status_code == 200


async def test_an_account_tokens_stream_carries_only_its_account(
    tokened: tuple[FastAPI, Gate],
) -> None:
    """acme's stream: acme's numbers, plan, queue and counts; nothing of globex or shared layers."""
    app, _ = tokened
    async with serving(app) as http:
        for token, number, ids in [(ACME, A1, ["a1", "a2"]), (GLOBEX, G1, ["g1", "g2", "g3"])]:
            for call_id in ids:
                body = {"call_id": call_id, "direction": "inbound", "number": number}
                answer = await http.post("/v1/calls", json=body, headers=bearer(token))
                assert answer.status_code == 200, answer.text
        event = (await stream(app, query=f"token={ACME}")).events()[0]
        admin = (await stream(app, headers=bearer(ADMIN))).events()[0]
    scopes = {(row["layer"], row["scope"]) for row in event["usage"]["layers"]}
    assert scopes == {("number", A1), ("account", "acme")}
    assert {w["scope"] for w in event["usage"]["windows"]} == {f"{A1}:outbound:1m"}
    assert event["usage"]["cooldowns"] == []
    assert [e["call_id"] for e in event["queue"]["entries"]] == ["a2"]
    assert event["account"] == "acme"
    assert event["process"]["totals"]["by_outcome"] == {
        "admitted": 1, "queued": 1, "retry_later": 0, "rejected": 0}
    assert "globex" not in json.dumps(event) and G1 not in json.dumps(event)
    assert admin["process"]["totals"]["by_outcome"]["queued"] == 3
    assert {e["call_id"] for e in admin["queue"]["entries"]} == {"a2", "g2", "g3"}


def test_the_access_log_masks_query_tokens() -> None:
    """A token sent as ?token= never reaches the access log in clear."""
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", f"{STREAM_PATH}?a=1&token={ADMIN}&b=2",
                                "1.1", 200), None)
    assert MaskQueryTokens().filter(record)
    assert ADMIN not in record.getMessage()
    assert f"{STREAM_PATH}?a=1&token=***&b=2" in record.getMessage()


# the page's files -----------------------------------------------------------------------
async def test_the_page_and_its_assets_are_public_and_local(
    tokened: tuple[FastAPI, Gate],
) -> None:
    """GET / and its assets need no token, come from the package, and name no other host."""
    app, _ = tokened
    async with serving(app) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        for name, media in ASSETS.items():
            asset = await http.get(f"/dashboard/{name}")
            assert (asset.status_code, asset.headers["content-type"]) == (200, media)
            assert asset.content == read_asset(name)
            assert f"/dashboard/{name}" in page.text
        assert (await http.get("/dashboard/nope.js")).status_code == 404
        openapi = (await http.get("/openapi.json")).json()
    assert STREAM_PATH in openapi["paths"] and "/" not in openapi["paths"]
    for name in ["index.html", *ASSETS]:
        text = read_asset(name).decode()
        assert re.findall(r"(?:https?:)?//[\w.-]+\.\w", text) == [], name
