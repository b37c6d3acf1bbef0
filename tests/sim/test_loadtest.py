"""The load tester against a real `callgate serve` and against deliberately broken gates."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests.served import free_port, served, served_app

from callgate.sim.commands import loadtest

N1, N2 = "+15550000001", "+15550000002"

STACK = f"""
[gate]
lease_ttl = "30s"

[trunks.t]
max_concurrent = 6

[plans.p]
max_concurrent = 6

[accounts.acme]
plan = "p"

[number_defaults]
account = "acme"
trunk = "t"
max_concurrent = 3

[numbers."{N1}"]
[numbers."{N2}"]

[providers.llm]
keys = ["k1", "k2"]
sessions_per_key = 3

[inbound]
queue_max = 5
max_wait = "1m"
handle_time = "20s"

[outbound]
retry_base = "5s"
retry_max = "20s"
max_attempts = 4
"""


@contextmanager
def serve(config: Path, db: Path, log: Path, speed: float) -> Iterator[str]:
    """`callgate serve --time-scale speed` on a free 127.0.0.1 port (SQLite store)."""
    with served(config, db, log, time_scale=speed, log_level="warning") as server:
        yield server.url


def stand_in(app: Starlette) -> AbstractContextManager[str]:
    """Serve a stand-in gate on a free 127.0.0.1 port in a thread."""
    return served_app(app)


def run_loadtest(*args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(loadtest, [*args, "--json"], catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.slow
def test_real_gate_has_no_silent_failure_and_no_cap_violation(tmp_path: Path) -> None:
    """A real serve at 1.5x: no silent failure or violation, caps hit, all paths taken, no leak."""
    config = tmp_path / "stack.toml"
    config.write_text(STACK, encoding="utf-8")
    with serve(config, tmp_path / "gate.db", tmp_path / "serve.log", 20) as url:
        code, doc = run_loadtest(
            "--url", url, "--config", str(config), "--peak", "6", "--aht", "20s",
            "--duration", "8", "--speed", "20", "--grace", "6", "--outbound-fraction", "0.3",
            "--die-fraction", "0.05", "--seed", "3")
        left = httpx.get(f"{url}/v1/usage", timeout=5.0).json()
    assert [row for row in left["layers"] if row["in_use"] or row["queued"]] == []
    assert (doc["silent_failures"], doc["cap_violations"], code) == (0, 0, 0), doc
    assert isinstance(doc["silent_failures"], int) and isinstance(doc["cap_violations"], int)
    counts = doc["counts"]
    assert counts["queued"] > 0 and counts["promoted"] > 0 and counts["retried"] > 0
    peaks = {(row["layer"], row["scope"]): (row["peak"], row["cap"]) for row in doc["scopes"]}
    assert peaks[("account", "acme")] == (6, 6)
    assert all(peak <= cap for peak, cap in peaks.values())
    assert doc["latency_ms"]["acquire"]["n"] > counts["arrivals"]


def _lease(now: float) -> dict[str, Any]:
    return {"account": "acme", "expires_at": now + 30, "ttl_s": 30.0, "admitted_at": now,
            "keys": {}}


def stand_in_gate(*, cap: int, fail_every: int = 0) -> Starlette:
    """A gate that admits every call whatever its cap, and with ``fail_every`` answers
    every n-th acquire with HTTP 500."""
    asked = {"n": 0}

    async def acquire(request: Request) -> JSONResponse:
        body = await request.json()
        asked["n"] += 1
        if fail_every and asked["n"] % fail_every == 0:
            return JSONResponse({"detail": "boom"}, status_code=500)
        return JSONResponse({
            "call_id": body["call_id"], "decision": "admitted", "layer": "number",
            "scope": body["number"], "reason": "admitted", "lease": _lease(time.time()),
            "queue": None, "retry_after_s": None, "message": None})

    async def renew(request: Request) -> JSONResponse:
        return JSONResponse({"call_id": request.path_params["call_id"],
                             "lease": _lease(time.time())})

    async def release(request: Request) -> JSONResponse:
        return JSONResponse({"released": True, "cancelled": False})

    async def usage(request: Request) -> JSONResponse:
        layers = [{"layer": "number", "scope": n, "in_use": 0, "cap": cap, "queued": 0}
                  for n in (N1, N2)]
        layers.append({"layer": "account", "scope": "acme", "in_use": 0, "cap": 2 * cap,
                       "queued": 0})
        return JSONResponse({"now": time.time(), "ttl_s": 30.0, "layers": layers,
                             "windows": [], "cooldowns": []})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[
        Route("/v1/calls", acquire, methods=["POST"]),
        Route("/v1/calls/{call_id}/renew", renew, methods=["POST"]),
        Route("/v1/calls/{call_id}", release, methods=["DELETE"]),
        Route("/v1/usage", usage, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
    ])


FAST = ("--peak", "10", "--aht", "10s", "--speed", "10", "--duration", "2", "--grace", "1",
        "--seed", "1")


def test_over_admitting_gate_is_caught_and_fails_the_run(tmp_path: Path) -> None:
    """A gate admitting past its caps shows cap violations (JSON and HTML) and exits non-zero."""
    page = tmp_path / "loadtest.html"
    with stand_in(stand_in_gate(cap=1)) as url:
        code, doc = run_loadtest("--url", url, *FAST, "--html", str(page))
    assert code != 0
    assert doc["cap_violations"] > 0 and doc["silent_failures"] == 0
    assert {v["key"] for v in doc["violations"]} >= {"account:acme"}
    assert doc["scopes_exact"] is False
    text = page.read_text(encoding="utf-8")
    assert f'class="bad">cap violations: {doc["cap_violations"]}<' in text
    assert 'class="good">silent failures: 0<' in text


def test_gate_answering_500s_is_caught_and_fails_the_run() -> None:
    """A gate answering some acquires with 500 shows silent failures by kind and exits non-zero."""
    with stand_in(stand_in_gate(cap=1000, fail_every=3)) as url:
        code, doc = run_loadtest("--url", url, *FAST)
    assert code != 0
    assert doc["silent_failures"] > 0 and doc["cap_violations"] == 0
    assert doc["failures_by_kind"]["acquire: HTTP 500"] == doc["silent_failures"]


def test_unreachable_gate_is_one_clear_error() -> None:
    """No gate at the URL: one message naming the URL, exit 1, no traceback."""
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(loadtest, ["--url", url, "--rate", "1"])
    assert result.exit_code == 1
    assert url in result.output and "Traceback" not in result.output


def test_seeded_traffic_does_not_depend_on_timing() -> None:
    """A seed draws the same arrivals whatever the server answers and however fast."""
    quick = (*FAST[:-6], "--duration", "1", "--grace", "0", "--seed", "4")
    with stand_in(stand_in_gate(cap=1000)) as url:
        _, first = run_loadtest("--url", url, *quick)
        _, second = run_loadtest("--url", url, *quick)
    assert first["counts"]["arrivals"] == second["counts"]["arrivals"] > 0
    assert first["counts"]["outbound"] == second["counts"]["outbound"]
