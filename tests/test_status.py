"""`callgate status`: the gate's usage as tables busiest first, as JSON, watched, with tokens."""

from __future__ import annotations

import asyncio
import json
import socket
import tomllib
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner
from rich.console import Console
from starlette.types import ASGIApp

from callgate.cli import cli
from callgate.config import parse_stack
from callgate.model import Call
from callgate.service.app import create_app
from callgate.service.auth import digest
from callgate.status import Snapshot, StatusError, busiest_first, render, run
from callgate.testing import FakeClock, memory_gate

A1, A2, G1 = "+14155550100", "+14155550101", "+14155550200"
ADMIN, ACME = "admin-token-for-status", "acme-token-for-status"
STACK = f"""
[gate]
lease_ttl = "30s"
store = "memory://"
poll_timeout = "1h"

[trunks.t]
max_concurrent = 10

[plans.basic]
max_concurrent = 4

[accounts.acme]
plan = "basic"

[accounts.globex]
plan = "basic"

[numbers."{A1}"]
account = "acme"
trunk = "t"
max_concurrent = 2
windows = [{{ direction = "outbound", limit = 5, per = "1m" }}]

[numbers."{A2}"]
account = "acme"
trunk = "t"
max_concurrent = 3

[numbers."{G1}"]
account = "globex"
trunk = "t"
max_concurrent = 2

[inbound]
queue_max = 5
max_wait = "1h"

[[api.tokens]]
name = "ops"
admin = true
sha256 = "{digest(ADMIN)}"

[[api.tokens]]
name = "acme-agents"
account = "acme"
sha256 = "{digest(ACME)}"
"""


class SyncASGITransport(httpx.BaseTransport):
    """A synchronous httpx transport into an ASGI app, in-process (no sockets, no lifespan)."""

    def __init__(self, app: ASGIApp) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.loop = asyncio.new_event_loop()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def send() -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers,
                                  content=content)

        return self.loop.run_until_complete(send())

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def app_client() -> Iterator[httpx.Client]:
    """A gate (memory store, fake clock) with A1 full, one caller on hold and one call on A2."""
    gate = memory_gate(parse_stack(tomllib.loads(STACK)), FakeClock())
    for call_id, number in (("a", A1), ("b", A1), ("q", A1), ("c", A2)):
        gate.acquire(Call(call_id, "inbound", number))
    with httpx.Client(transport=SyncASGITransport(create_app(gate)),
                      base_url="http://gate") as http:
        yield http


def _console() -> Console:
    return Console(record=True, width=140, highlight=False, color_system=None)


def test_the_table_puts_the_fullest_scope_first_and_counts_leases_and_holds(
        app_client: httpx.Client) -> None:
    """Rows are ordered by share of cap in use; the header counts leases and callers on hold."""
    app_client.headers["Authorization"] = f"Bearer {ADMIN}"
    console = _console()
    run(app_client, url="http://gate", console=console, with_queue=True)
    text = console.export_text()
    assert "3 leases, 1 on hold, 0 expired unreleased" in text
    rows = [[cell.strip() for cell in line.split("│")[1:-1]]
            for line in text.splitlines() if line.startswith("│ ")]
    assert rows[0] == ["number", A1, "2", "2", "100%", "1"]  # full, one on hold
    assert rows[1] == ["account", "acme", "3", "4", "75%", "1"]
    assert "On hold, per number in queue order" in text and "│ q " in text


def test_busiest_first_breaks_ties_by_queue_then_layer_then_scope() -> None:
    """Equal shares order by queued callers, then trunk, number, account..., then scope name."""
    rows = [{"layer": "account", "scope": "a", "in_use": 1, "cap": 2, "queued": 0},
            {"layer": "number", "scope": "+2", "in_use": 1, "cap": 2, "queued": 0},
            {"layer": "number", "scope": "+1", "in_use": 1, "cap": 2, "queued": 0},
            {"layer": "number", "scope": "+9", "in_use": 1, "cap": 2, "queued": 3},
            {"layer": "trunk", "scope": "t", "in_use": 0, "cap": 0, "queued": 0},
            {"layer": "resource", "scope": "db", "in_use": 5, "cap": 5, "queued": 0}]
    assert [r["scope"] for r in busiest_first(rows)] == ["db", "+9", "+1", "+2", "a", "t"]


def test_json_is_the_usage_document_as_the_gate_sent_it(
        app_client: httpx.Client, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json` prints /v1/usage unchanged (plus the queue with --queue)."""
    app_client.headers["Authorization"] = f"Bearer {ADMIN}"
    run(app_client, url="http://gate", as_json=True, with_queue=True)
    printed = json.loads(capsys.readouterr().out)
    usage = app_client.get("/v1/usage").json()
    assert {k: v for k, v in printed.items() if k not in ("now", "queue")} == {
        k: v for k, v in usage.items() if k != "now"}
    assert [e["call_id"] for e in printed["queue"]] == ["q"]


def test_an_account_token_sees_only_its_account(
        app_client: httpx.Client, capsys: pytest.CaptureFixture[str]) -> None:
    """With an account token the document holds that account's numbers and plan, nothing shared."""
    app_client.headers["Authorization"] = f"Bearer {ACME}"
    run(app_client, url="http://gate", as_json=True)
    scopes = {(r["layer"], r["scope"]) for r in json.loads(capsys.readouterr().out)["layers"]}
    assert scopes == {("number", A1), ("number", A2), ("account", "acme")}


def test_no_token_is_one_line_naming_the_flag_and_the_variable(app_client: httpx.Client) -> None:
    """A gate that needs a token answers 401: the error says --token and CALLGATE_TOKEN."""
    with pytest.raises(StatusError) as refused:
        run(app_client, url="http://gate")
    assert "--token" in refused.value.message and "CALLGATE_TOKEN" in refused.value.message
    assert refused.value.exit_code == 1


def test_reload_needs_an_admin_token_and_reports_the_scopes(
        app_client: httpx.Client, capsys: pytest.CaptureFixture[str]) -> None:
    """`--reload` with an account token is refused (403); with the admin token it reloads."""
    app_client.headers["Authorization"] = f"Bearer {ACME}"
    with pytest.raises(StatusError, match="403"):
        run(app_client, url="http://gate", do_reload=True)
    app_client.headers["Authorization"] = f"Bearer {ADMIN}"
    # a gate built without a stack file has nothing to reload: 409, said in one line
    with pytest.raises(StatusError, match=r"409.*no config file"):
        run(app_client, url="http://gate", do_reload=True, as_json=True)
    assert capsys.readouterr().out == ""


def test_watch_stops_after_count_and_sleeps_the_interval_between(
        app_client: httpx.Client, capsys: pytest.CaptureFixture[str]) -> None:
    """`--watch --json --count 3` prints three documents, one per line, sleeping in between."""
    app_client.headers["Authorization"] = f"Bearer {ADMIN}"
    slept: list[float] = []
    run(app_client, url="http://gate", as_json=True, watch=True, interval_s=1.5, count=3,
        sleep=slept.append)
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["leases"] for line in lines] == [3, 3, 3]
    assert slept == [1.5, 1.5]


def test_ctrl_c_ends_a_watch_cleanly(app_client: httpx.Client) -> None:
    """A KeyboardInterrupt while waiting ends the watch without an error; the view was drawn."""
    app_client.headers["Authorization"] = f"Bearer {ADMIN}"
    console = _console()

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    run(app_client, url="http://gate", watch=True, console=console, sleep=interrupted)
    assert "3 leases, 1 on hold" in console.export_text()


def test_a_failed_refresh_is_shown_and_the_watch_goes_on(
        app_client: httpx.Client, capsys: pytest.CaptureFixture[str]) -> None:
    """In a JSON watch a refused refresh goes to stderr and the next one still prints."""
    tokens = iter(["wrong", ADMIN])

    def rotate(seconds: float) -> None:
        app_client.headers["Authorization"] = f"Bearer {next(tokens)}"

    rotate(0)
    run(app_client, url="http://gate", as_json=True, watch=True, count=2, sleep=rotate)
    out, err = capsys.readouterr()
    assert "401" in err and "retrying" in err
    assert [json.loads(line)["leases"] for line in out.splitlines()] == [3]


def test_top_cuts_the_idle_scopes_and_says_how_many() -> None:
    """`--top 1` shows the busiest row and a line counting the rest."""
    usage = {"now": 0.0, "ttl_s": 30.0, "leases": 1, "expired_total": 0, "windows": [],
             "cooldowns": [{"scope": "llm:key-a", "until": None}],
             "layers": [{"layer": "number", "scope": "+1", "in_use": 0, "cap": 2, "queued": 0},
                        {"layer": "trunk", "scope": "t", "in_use": 1, "cap": 2, "queued": 0}]}
    console = _console()
    console.print(render(Snapshot(usage), "http://gate", top=1))
    text = console.export_text()
    assert "│ trunk " in text and "│ number " not in text
    assert "1 more scopes (--top 0 shows all)" in text
    assert "disabled until reload" in text


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_gate_exits_1_with_one_line() -> None:
    """Nothing listening: exit 1, 'cannot reach the gate at URL', no traceback."""
    url = f"http://127.0.0.1:{_closed_port()}"
    result = CliRunner(env={"CALLGATE_TOKEN": None, "CALLGATE_URL": None}).invoke(
        cli, ["status", "--url", url, "--timeout", "2s"])
    assert result.exit_code == 1
    assert f"cannot reach the gate at {url}/v1/usage" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("args", "named"), [
    (["--count", "2"], "--count"),
    (["--watch", "--interval", "100ms"], "--interval"),
    (["--url", "127.0.0.1:8080"], "--url"),
])
def test_bad_flags_exit_2_naming_the_flag(args: list[str], named: str) -> None:
    """--count without --watch, an interval under 0.5 s, a URL without scheme: exit 2."""
    result = CliRunner().invoke(cli, ["status", *args])
    assert result.exit_code == 2 and named in result.output
