"""SIGHUP reloads a served gate like POST /v1/admin/reload: new caps, leases kept, bad file out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.served import Served, served

from callgate.errors import ConfigError, ConfigIssue
from callgate.service.auth import digest
from callgate.service.signals import hold_hangups, reload_on_hangup

N1, N2 = "+15550000001", "+15550000002"
ADMIN, AGENT = "admin-token-sighup", "agent-token-sighup"
AGENT_TOKEN = """
[[api.tokens]]
name = "acme-agents"
account = "acme"
env = "ACME_AGENT_TOKEN"
"""


def stack(n1_cap: int, *, agent_token: bool = True) -> str:
    return f"""
[gate]
lease_ttl = "5m"
poll_timeout = "5m"

[trunks.t]
max_concurrent = 10

[plans.p]
max_concurrent = 10

[accounts.acme]
plan = "p"

[numbers."{N1}"]
account = "acme"
trunk = "t"
max_concurrent = {n1_cap}

[numbers."{N2}"]
account = "acme"
trunk = "t"
max_concurrent = 2

[inbound]
queue_max = 5
max_wait = "10m"

[[api.tokens]]
name = "ops"
admin = true
sha256 = "{digest(ADMIN)}"
""" + (AGENT_TOKEN if agent_token else "")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def acquire(http: httpx.Client, url: str, call_id: str, number: str = N1) -> dict[str, Any]:
    response = http.post(f"{url}/v1/calls", headers=bearer(ADMIN), json={
        "call_id": call_id, "direction": "inbound", "number": number})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def row(usage: dict[str, Any], layer: str, scope: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in usage["layers"]
                                 if (r["layer"], r["scope"]) == (layer, scope))
    return found


def usage_of(http: httpx.Client, server: Served) -> dict[str, Any]:
    response = http.get(f"{server.url}/v1/usage", headers=bearer(ADMIN))
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def wait_for_cap(http: httpx.Client, server: Served, cap: int, timeout_s: float = 20.0
                 ) -> dict[str, Any]:
    """The usage document once N1's cap reads ``cap`` (a bounded poll of a real process)."""
    deadline = time.monotonic() + timeout_s
    while True:
        usage = usage_of(http, server)
        if row(usage, "number", N1)["cap"] == cap:
            return usage
        if time.monotonic() > deadline or server.proc.poll() is not None:
            pytest.fail(f"N1's cap is not {cap} {timeout_s} s after SIGHUP:\n"
                        f"{usage}\n{server.output()}")
        time.sleep(0.05)  # polling a real process, with a deadline


def status_json(server: Served, *args: str) -> dict[str, Any]:
    """`callgate status --json` run as a real command against the served gate."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}
    env["CALLGATE_TOKEN"] = ADMIN
    done = subprocess.run(
        [sys.executable, "-m", "callgate.cli", "status", "--url", server.url, "--json", *args],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


@pytest.mark.slow
def test_sighup_applies_a_new_cap_keeps_every_lease_and_rereads_tokens(tmp_path: Path) -> None:
    """Cap 2 -> 3 and a token removed, then SIGHUP: leases renew, the head is promoted, 401."""
    config = tmp_path / "stack.toml"
    config.write_text(stack(2), encoding="utf-8")
    env = {"ACME_AGENT_TOKEN": AGENT}
    with httpx.Client(timeout=10.0) as http, \
            served(config, tmp_path / "gate.db", tmp_path / "serve.log", env=env,
                   log_level="warning", reaper_interval_s=0.5) as server:
        admitted = [acquire(http, server.url, f"call-{i}") for i in range(2)]
        other = acquire(http, server.url, "other", N2)
        queued = [acquire(http, server.url, f"wait-{i}") for i in range(2)]
        assert [a["decision"] for a in [*admitted, other]] == ["admitted"] * 3
        assert [q["decision"] for q in queued] == ["queued", "queued"]
        before = status_json(server, "--queue")  # the CLI, against the real gate
        assert before["leases"] == 3 and row(before, "number", N1)["queued"] == 2
        assert [e["call_id"] for e in before["queue"]] == ["wait-0", "wait-1"]
        agent_usage = http.get(f"{server.url}/v1/usage", headers=bearer(AGENT))
        assert agent_usage.status_code == 200

        config.write_text(stack(3, agent_token=False), encoding="utf-8")
        server.proc.send_signal(signal.SIGHUP)
        after = wait_for_cap(http, server, 3)

        assert server.proc.poll() is None  # SIGHUP no longer kills the gate
        for call_id in ["call-0", "call-1", "other"]:
            renewed = http.post(f"{server.url}/v1/calls/{call_id}/renew", headers=bearer(ADMIN))
            assert renewed.status_code == 200, renewed.text
        promoted = acquire(http, server.url, "wait-0")
        assert (promoted["decision"], promoted["reason"]) == ("admitted", "promoted")
        assert acquire(http, server.url, "wait-1")["queue"]["position"] == 1
        assert after["leases"] == 4 and row(after, "number", N1)["in_use"] == 3
        refused = http.get(f"{server.url}/v1/usage", headers=bearer(AGENT))
        assert refused.status_code == 401  # the removed token stopped working
        assert status_json(server)["leases"] == 4
        assert server.stop() == 0, server.output()
    assert "Traceback" not in server.output()


@pytest.mark.slow
def test_sighup_with_a_bad_file_logs_it_and_keeps_the_running_stack(tmp_path: Path) -> None:
    """A bad cap on SIGHUP: the log names the key; the old caps and leases stay; serving goes on."""
    config = tmp_path / "stack.toml"
    config.write_text(stack(2), encoding="utf-8")
    env = {"ACME_AGENT_TOKEN": AGENT}
    with httpx.Client(timeout=10.0) as http, \
            served(config, tmp_path / "gate.db", tmp_path / "serve.log", env=env,
                   log_level="warning", reaper_interval_s=0.5) as server:
        assert acquire(http, server.url, "call-0")["decision"] == "admitted"
        config.write_text(stack(-4), encoding="utf-8")
        server.proc.send_signal(signal.SIGHUP)
        output = server.wait_for_output("reload refused")
        assert f'numbers."{N1}".max_concurrent' in output and "-4" in output

        usage = usage_of(http, server)
        assert row(usage, "number", N1)["cap"] == 2 and usage["leases"] == 1
        assert acquire(http, server.url, "call-1")["decision"] == "admitted"
        assert acquire(http, server.url, "call-2")["decision"] == "queued"  # cap 2 still holds
        assert http.get(f"{server.url}/v1/usage", headers=bearer(AGENT)).status_code == 200

        config.write_text(stack(3), encoding="utf-8")  # fixed: the next reload applies it
        reloaded = status_json(server, "--reload")
        assert reloaded["reload"]["reloaded"] is True
        assert row(reloaded, "number", N1)["cap"] == 3
        assert server.stop() == 0, server.output()
    assert "Traceback" not in server.output()


# the handler itself, in this process ----------------------------------------------------
def test_sighup_runs_the_reload_in_a_worker_thread_and_restores_the_handler() -> None:
    """Inside the block SIGHUP calls reload off the main thread; after it, the old handler."""
    called = threading.Event()
    threads: list[str] = []

    def reload() -> int:
        threads.append(threading.current_thread().name)
        called.set()
        return 1

    before = signal.getsignal(signal.SIGHUP)
    with reload_on_hangup(reload, "stack.toml"):
        os.kill(os.getpid(), signal.SIGHUP)
        assert called.wait(timeout=10.0)
    assert threads == ["callgate-sighup-reload"]
    assert signal.getsignal(signal.SIGHUP) is before


def test_a_failing_reload_is_logged_and_the_next_sighup_still_reloads(
        caplog: pytest.LogCaptureFixture) -> None:
    """A ConfigError (logged by the app) or any other failure never stops later reloads."""
    results: list[Exception | int] = [ConfigError("stack.toml", [ConfigIssue("x", 1, "bad")]),
                                      RuntimeError("boom"), 5]
    done = threading.Semaphore(0)

    def reload() -> int:
        try:
            outcome = results.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        finally:
            done.release()

    with caplog.at_level("INFO", logger="callgate.serve"), \
            reload_on_hangup(reload, "stack.toml"):
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGHUP)
            assert done.acquire(timeout=10.0)
    assert results == []
    messages = [r.getMessage() for r in caplog.records if r.name == "callgate.serve"]
    assert messages.count("SIGHUP: reloading stack.toml") == 3
    assert any("reload failed unexpectedly" in m for m in messages)


def test_a_sighup_during_start_up_is_held_and_reloads_once_serving_starts() -> None:
    """A HUP after hold_hangups() does not kill; entering reload_on_hangup then reloads once."""
    calls = threading.Semaphore(0)
    before = signal.getsignal(signal.SIGHUP)
    try:
        held = hold_hangups()
        os.kill(os.getpid(), signal.SIGHUP)
        assert held.wait(timeout=10.0)

        def reload() -> int:
            calls.release()
            return 1

        with reload_on_hangup(reload, "stack.toml", held):
            assert calls.acquire(timeout=10.0)
        assert not calls.acquire(timeout=0)  # once, not again
    finally:
        signal.signal(signal.SIGHUP, before)
