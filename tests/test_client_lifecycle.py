"""A lease's whole life through both clients: TTLs, adopting a webhook's lease, no gate at all.

The async client talks to the app in-process; the sync client to the same app served by
uvicorn on a loopback port (httpx's sync client needs a socket). Both on a memory gate with
a fake clock.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.served import free_port, served_app

from callgate.client import (
    CallNotAdmitted,
    GateClient,
    GateUnavailableError,
    LeaseLostError,
    SyncGateClient,
)
from callgate.config import parse_stack
from callgate.gate import Gate
from callgate.model import Call, Outcome, Reason
from callgate.service.app import create_app
from callgate.testing import FakeClock, memory_gate

N = "+14155550100"

STACK = f"""
[gate]
lease_ttl = "30s"
max_call_duration = "2h"
store = "memory://"

[trunks.east]
max_concurrent = 10

[plans.growth]
max_concurrent = 10

[accounts.acme]
plan = "growth"

[numbers."{N}"]
account = "acme"
trunk = "east"
max_concurrent = 2

[inbound]
overflow_message = "Acme is busy; we will call you back."

[outbound]
dial_ttl = "90s"
"""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gate(clock: FakeClock) -> Gate:
    return memory_gate(parse_stack(tomllib.loads(STACK)), clock)


def in_use(gate: Gate) -> int:
    return next(int(row["in_use"]) for row in gate.usage()["layers"]
                if row["layer"] == "number" and row["scope"] == N)


def webhook_lease(gate: Gate, call_id: str = "CA1") -> None:
    """What /twilio/voice does for an admitted caller: a lease of the webhook TTL (2 h)."""
    decision = gate.acquire(Call(call_id, "inbound", N), ttl_s=gate.stack.webhook_lease_ttl())
    assert decision.lease is not None and decision.lease.ttl_s == 7200


def async_client(gate: Gate, **options: Any) -> GateClient:
    return GateClient("http://callgate.test", transport=httpx.ASGITransport(app=create_app(gate)),
                      **options)


def nowhere() -> str:
    """The URL of a gate that is not running (nothing listens on the port)."""
    return f"http://127.0.0.1:{free_port()}"


async def wait_for(event: asyncio.Event) -> None:
    async with asyncio.timeout(5):
        await event.wait()


# async client -----------------------------------------------------------------------------
@pytest.mark.anyio
async def test_acquire_sends_ttl_s_and_an_outbound_lease_rings_on_dial_ttl(
        gate: Gate, clock: FakeClock) -> None:
    """acquire(ttl_s=) sets the TTL; without it an outbound lease first lives dial_ttl."""
    async with async_client(gate) as client:
        own = await client.acquire("in", "inbound", N, ttl_s=600)
        dial = await client.acquire("out", "outbound", N)
    assert own.lease is not None and own.lease.ttl_s == 600
    assert dial.lease is not None and dial.lease.expires_at == clock.now + 90
    assert dial.lease.ttl_s == 30


@pytest.mark.anyio
async def test_renew_passes_ttl_and_account(gate: Gate, clock: FakeClock) -> None:
    """renew(ttl_s=, account=) reaches the gate: the lease's TTL becomes the one sent."""
    webhook_lease(gate)
    async with async_client(gate) as client:
        lease = await client.renew("CA1", ttl_s=30, account="acme")
        assert (lease.ttl_s, lease.expires_at) == (30, clock.now + 30)
        with pytest.raises(LeaseLostError):
            await client.renew("CA1", account="globex")  # not acme's: unknown to globex


@pytest.mark.anyio
async def test_adopt_turns_a_webhook_lease_into_a_heartbeat_lease(
        gate: Gate, clock: FakeClock) -> None:
    """adopt() renews the webhook's 2 h lease to lease_ttl at once and releases on exit."""
    webhook_lease(gate)
    async with async_client(gate, sleep=lambda s: asyncio.sleep(3600)) as client:
        async with client.adopt("CA1") as lease:
            assert lease.ttl_s == 30 and lease.expires_at == clock.now + 30
            assert lease.decision.outcome is Outcome.ADMITTED
            assert in_use(gate) == 1
        assert in_use(gate) == 0


@pytest.mark.anyio
async def test_adopt_heartbeats_and_sets_lost_when_the_gate_forgets(
        gate: Gate, clock: FakeClock) -> None:
    """The adopted lease is renewed every ttl/3; once the gate ends it, ``lost`` is set."""
    webhook_lease(gate)
    ticks = 0

    async def sleep(seconds: float) -> None:
        nonlocal ticks
        ticks += 1
        clock.advance(seconds)
        if ticks == 3:  # the status callback (or an admin) ends the call meanwhile
            gate.release("CA1")
        await asyncio.sleep(0)

    async with async_client(gate, sleep=sleep) as client, client.adopt("CA1") as lease:
        await wait_for(lease.lost)
    assert lease.renewals == 2 and lease.lost_status == "ended"


@pytest.mark.anyio
async def test_adopting_a_lease_that_is_gone_is_not_admitted(gate: Gate) -> None:
    """adopt() of an ended call raises CallNotAdmitted (call_ended), not a bare HTTP error."""
    webhook_lease(gate)
    gate.release("CA1")
    async with async_client(gate) as client:
        with pytest.raises(CallNotAdmitted) as refused:
            async with client.adopt("CA1"):
                pytest.fail("adopted a lease that had ended")
    assert refused.value.reason is Reason.CALL_ENDED


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["call", "adopt"])
async def test_an_unreachable_gate_is_a_refusal_with_the_overflow_wording(how: str) -> None:
    """call() and adopt() turn no gate at all into CallNotAdmitted(gate_unreachable)."""
    async with GateClient(nowhere(), connect_retry_s=0.2,
                          unreachable_message="Acme is busy.") as client:
        with pytest.raises(CallNotAdmitted) as refused:
            entered = client.call("c1", "inbound", N) if how == "call" else client.adopt("c1")
            async with entered:
                pytest.fail("entered without a gate")
    assert refused.value.reason is Reason.GATE_UNREACHABLE
    assert refused.value.outcome is Outcome.REJECTED
    assert refused.value.message == "Acme is busy."
    assert isinstance(refused.value.__cause__, GateUnavailableError)


@pytest.mark.anyio
async def test_acquire_renew_release_keep_raising_unavailable() -> None:
    """The single requests still raise GateUnavailableError: the caller decides."""
    async with GateClient(nowhere(), connect_retry_s=0) as client:
        for request in (client.acquire("c1", "inbound", N), client.renew("c1"),
                        client.release("c1")):
            with pytest.raises(GateUnavailableError, match="cannot reach"):
                await request


@pytest.mark.anyio
async def test_a_transient_connect_error_is_retried(gate: Gate) -> None:
    """Connect errors within connect_retry_s are retried; the request then succeeds."""
    inner = httpx.ASGITransport(app=create_app(gate))
    failures = 2

    class Flaky(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            nonlocal failures
            if failures:
                failures -= 1
                raise httpx.ConnectError("connection refused", request=request)
            return await inner.handle_async_request(request)

    async with GateClient("http://callgate.test", transport=Flaky(),
                          connect_retry_s=5) as client:
        decision = await client.acquire("c1", "inbound", N)
    assert decision.admitted and failures == 0


# sync client --------------------------------------------------------------------------------
@pytest.fixture
def gate_url(gate: Gate) -> Iterator[str]:
    with served_app(create_app(gate)) as url:
        yield url


def test_sync_acquire_renew_release(gate: Gate, clock: FakeClock, gate_url: str) -> None:
    """SyncGateClient: acquire with ttl_s, renew with ttl_s, release, like the async client."""
    with SyncGateClient(gate_url) as client:
        decision = client.acquire("out", "outbound", N)
        assert decision.lease is not None and decision.lease.expires_at == clock.now + 90
        clock.advance(5)
        lease = client.renew("out", ttl_s=45)
        assert (lease.ttl_s, lease.expires_at) == (45, clock.now + 45)
        assert client.release("out") == {"released": True, "cancelled": False}
        with pytest.raises(LeaseLostError) as lost:
            client.renew("out")
    assert lost.value.status == "ended"


def test_sync_adopt_heartbeats_and_releases(gate: Gate, clock: FakeClock, gate_url: str) -> None:
    """SyncGateClient.adopt: lease_ttl at once, renewed in a thread, released on exit."""
    webhook_lease(gate)
    with SyncGateClient(gate_url) as client:
        with client.adopt("CA1", renew_interval_s=0.01) as lease:
            assert lease.ttl_s == 30 and in_use(gate) == 1
            deadline = 200
            while lease.renewals < 2 and deadline:  # the heartbeat thread, bounded
                deadline -= 1
                lease.lost.wait(0.02)
            assert lease.renewals >= 2 and not lease.lost.is_set()
        assert in_use(gate) == 0


def test_sync_call_releases_on_an_exception(gate: Gate, gate_url: str) -> None:
    """SyncGateClient.call: the block's exception propagates and the lease is released."""
    with SyncGateClient(gate_url) as client:
        with pytest.raises(RuntimeError, match="agent crashed"), client.call("c1", "inbound", N):
            assert in_use(gate) == 1
            raise RuntimeError("agent crashed")
        assert in_use(gate) == 0


def test_sync_call_polls_a_queued_call_until_promoted(gate: Gate, gate_url: str) -> None:
    """A queued call is polled (injected sleep) and admitted once a slot frees."""
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:
            gate.release("first")

    gate.acquire(Call("first", "inbound", N))
    gate.acquire(Call("second", "inbound", N))
    with SyncGateClient(gate_url, sleep=sleep, poll_interval_s=1.0) as client, \
            client.call("c3", "inbound", N) as lease:
        assert lease.decision.reason is Reason.PROMOTED
    assert len(pauses) == 2


@pytest.mark.parametrize("how", ["call", "adopt"])
def test_sync_unreachable_gate_is_a_refusal(how: str) -> None:
    """SyncGateClient.call/adopt: no gate at all is CallNotAdmitted(gate_unreachable)."""
    with SyncGateClient(nowhere(), connect_retry_s=0.2) as client, \
            pytest.raises(CallNotAdmitted) as refused:
        entered = client.call("c1", "inbound", N) if how == "call" else client.adopt("c1")
        with entered:
            pytest.fail("entered without a gate")
    assert refused.value.reason is Reason.GATE_UNREACHABLE
    assert refused.value.message and "call again" in refused.value.message
