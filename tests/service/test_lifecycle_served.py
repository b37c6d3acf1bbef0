"""A call's lease on a real `callgate serve --time-scale 10`: ringing, answering, adopting, dying.

Time here is the gate's own (``now`` in /v1/usage), ten times faster than the wall clock;
the tests wait for the gate's clock to pass a point, with a bounded deadline, and leave at
least two wall seconds of slack on either side of every expiry.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from tests.served import Served, served

from callgate.client import LeaseLostError, SyncGateClient

pytest.importorskip("twilio", reason="the voice webhooks need the twilio package (an extra)")
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

pytestmark = pytest.mark.slow

SCALE = 10.0
N = "+14155550100"
TOKEN = "lifecycle-auth-token"

STACK = f"""
[gate]
lease_ttl = "30s"
max_call_duration = "2h"

[trunks.t]
max_concurrent = 10

[plans.p]
max_concurrent = 10

[accounts.acme]
plan = "p"

[numbers."{N}"]
account = "acme"
trunk = "t"
max_concurrent = 5

[outbound]
dial_ttl = "90s"

[twilio]
auth_token_env = "LIFECYCLE_TWILIO_TOKEN"
stream_url = "wss://agent.test/stream"
"""


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Served]:
    config = tmp_path / "stack.toml"
    config.write_text(STACK)
    with served(config, tmp_path / "gate.db", tmp_path / "serve.log", time_scale=SCALE,
                env={"LIFECYCLE_TWILIO_TOKEN": TOKEN}) as server:
        yield server


def gate_now(url: str) -> float:
    return float(httpx.get(f"{url}/v1/usage", timeout=5).json()["now"])


def in_use(url: str) -> int:
    rows = httpx.get(f"{url}/v1/usage", timeout=5).json()["layers"]
    return next(int(r["in_use"]) for r in rows if r["layer"] == "number" and r["scope"] == N)


def wait_until(url: str, moment: float, *, limit_s: float = 30.0) -> None:
    """Block until the gate's clock reads ``moment`` (bounded by ``limit_s`` wall seconds)."""
    deadline = time.monotonic() + limit_s
    while gate_now(url) < moment:
        assert time.monotonic() < deadline, "the gate's clock did not get there in time"
        time.sleep(0.05)  # a real, time-scaled server: polling its clock is the only way


def answer(url: str, call_id: str, sid: str) -> str:
    """The callee picked up: the provider posts the signed /twilio/outbound webhook."""
    path = f"/twilio/outbound?call_id={call_id}"
    params = {"CallSid": sid, "AccountSid": "AC1", "From": N, "To": "+12125550100",
              "CallStatus": "in-progress", "Direction": "outbound-api"}
    signature = RequestValidator(TOKEN).compute_signature(url + path, params)
    response = httpx.post(url + path, content=urlencode(params), timeout=5, headers={
        "content-type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})
    assert response.status_code == 200, response.text
    return response.text


def test_an_outbound_call_ringing_past_lease_ttl_is_connected_and_one_past_dial_ttl_told_why(
        gate: Served) -> None:
    """Ringing 50 s (lease_ttl 30 s) connects on answer; ringing past dial_ttl is expired."""
    with SyncGateClient(gate.url) as dialler:
        short = dialler.acquire("ring-50", "outbound", N, remote="+12125550100")
        long = dialler.acquire("ring-long", "outbound", N, remote="+12125550101")
        assert short.lease is not None and long.lease is not None
        admitted_at = short.lease.admitted_at or 0.0
        assert short.lease.expires_at - admitted_at == pytest.approx(90, abs=1)

        wait_until(gate.url, admitted_at + 50)  # 40 simulated s (4 wall s) before dial_ttl
        twiml = answer(gate.url, "ring-50", "CA50")
        assert "<Connect><Stream" in twiml and "cannot continue" not in twiml

        wait_until(gate.url, admitted_at + 90 + 2 * SCALE)  # 2 wall s past dial_ttl
        twiml = answer(gate.url, "ring-long", "CALONG")
        assert "cannot continue" in twiml and "<Stream" not in twiml
        with pytest.raises(LeaseLostError) as lost:
            dialler.renew("ring-long")
    assert lost.value.status == "expired"
    assert "rang longer than its TTL" in gate.output() and "dial_ttl = 90s" in gate.output()


ADOPTER = """
import sys
from callgate.client import SyncGateClient

with SyncGateClient(sys.argv[1]) as gate, gate.adopt(sys.argv[2], renew_interval_s=0.3) as lease:
    print(lease.ttl_s, flush=True)
    lease.lost.wait(120)  # a media worker streaming the call, until it is killed
"""


def test_a_killed_worker_that_adopted_a_webhook_lease_frees_it_within_one_ttl(
        gate: Served, tmp_path: Path) -> None:
    """adopt() turns the webhook's 2 h lease into lease_ttl: kill -9 frees it in one TTL."""
    path = "/twilio/voice"
    params = {"CallSid": "CAWEB", "AccountSid": "AC1", "From": "+12125550100", "To": N,
              "CallStatus": "ringing", "Direction": "inbound"}
    signature = RequestValidator(TOKEN).compute_signature(gate.url + path, params)
    voice = httpx.post(gate.url + path, content=urlencode(params), timeout=5, headers={
        "content-type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})
    assert "<Stream" in voice.text and in_use(gate.url) == 1

    with subprocess.Popen([sys.executable, "-c", ADOPTER, gate.url, "CAWEB"],
                          stdout=subprocess.PIPE, text=True) as worker:
        try:
            assert worker.stdout is not None
            assert float(worker.stdout.readline()) == 30.0  # the lease's TTL after adopting
            wait_until(gate.url, gate_now(gate.url) + 60)  # two TTLs: the heartbeat holds it
            assert in_use(gate.url) == 1
        finally:
            worker.kill()
            worker.wait(timeout=10)
    killed_at = gate_now(gate.url)
    deadline = time.monotonic() + 30
    while in_use(gate.url) and time.monotonic() < deadline:
        time.sleep(0.05)  # bounded: the reaper frees it on the gate's clock
    freed_at = gate_now(gate.url)
    assert in_use(gate.url) == 0
    assert freed_at - killed_at <= 30 + 2 * SCALE  # one TTL, and 2 wall s of slack
