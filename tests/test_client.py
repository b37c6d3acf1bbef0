"""GateClient against the real HTTP app (httpx.ASGITransport) on a memory gate with a fake clock."""

from __future__ import annotations

import asyncio
import json
import logging
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from callgate.client import (
    CallNotAdmitted,
    GateClient,
    GateHTTPError,
    GateProtocolError,
    GateUnavailableError,
    LeaseLostError,
    Sleep,
)
from callgate.config import Stack, parse_stack
from callgate.errors import CallConflictError, UnknownNumberError
from callgate.gate import Gate
from callgate.model import Layer, Outcome, Reason, RenewStatus
from callgate.service.app import create_app
from callgate.testing import FakeClock, memory_gate

pytestmark = pytest.mark.anyio

INBOUND = "+14155550100"  # cap 1: a second inbound call queues
PACED = "+14155550101"  # outbound, 1 per minute
SINGLE = "+14155550102"  # outbound, cap 1, no window: a second call backs off
HOLD = "Please hold."

STACK = f"""
[gate]
lease_ttl = "30s"
store = "memory://"

[trunks.east]
max_concurrent = 10

[plans.growth]
max_concurrent = 10

[accounts.acme]
plan = "growth"

[numbers."{INBOUND}"]
account = "acme"
trunk = "east"
max_concurrent = 1

[numbers."{PACED}"]
account = "acme"
trunk = "east"
max_concurrent = 5
windows = [{{ direction = "outbound", limit = 1, per = "1m" }}]

[numbers."{SINGLE}"]
account = "acme"
trunk = "east"
max_concurrent = 1

[providers.llm]
keys = ["key-a", "key-b"]
sessions_per_key = 5

[inbound]
max_wait = "10m"
hold_message = "{HOLD}"

[outbound]
retry_base = "10s"
jitter = "none"
max_attempts = 3
"""




def make_stack(**gate: Any) -> Stack:
    raw = tomllib.loads(STACK)
    raw["gate"].update(gate)
    return parse_stack(raw)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gate(clock: FakeClock) -> Gate:
    return memory_gate(make_stack(), clock)


@asynccontextmanager
async def open_client(
    gate: Gate, *, sleep: Sleep = asyncio.sleep, poll_interval_s: float = 2.0,
    wrap: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
) -> AsyncIterator[GateClient]:
    transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=create_app(gate))
    if wrap is not None:
        transport = wrap(transport)
    async with GateClient("http://callgate.test", transport=transport, sleep=sleep,
                          poll_interval_s=poll_interval_s) as client:
        yield client


class FakeSleep:
    """Records each pause, moves the gate's fake clock by ``factor`` x it, runs ``hook``.

    With ``real`` it also waits the pause on the event loop (the clock is then left alone).
    """

    def __init__(self, clock: FakeClock, *, factor: float = 1.0, real: bool = False,
                 hook: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.clock = clock
        self.factor = factor
        self.real = real
        self.hook = hook
        self.slept: list[float] = []
        self._changed = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        assert len(self.slept) < 100, f"runaway loop: slept {self.slept[:5]}..."
        self.slept.append(seconds)
        self._changed.set()
        if self.hook is not None:
            await self.hook(len(self.slept))
        if self.real:
            await asyncio.sleep(seconds)
        else:
            self.clock.advance(seconds * self.factor)
            await asyncio.sleep(0)  # let other tasks run, as a real sleep would

    async def until(self, count: int, timeout_s: float = 5.0) -> None:
        """Wait (bounded) until ``count`` pauses have begun."""
        async with asyncio.timeout(timeout_s):
            while len(self.slept) < count:
                self._changed.clear()
                await self._changed.wait()


class FailingRenews(httpx.AsyncBaseTransport):
    """Passes requests to ``inner`` but fails the first ``count`` renews with a network error."""

    def __init__(self, inner: httpx.AsyncBaseTransport, count: int) -> None:
        self.inner = inner
        self.count = count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/renew") and self.count > 0:
            self.count -= 1
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


class HeldReleases(httpx.AsyncBaseTransport):
    """Passes requests to ``inner`` but holds each release until ``proceed`` is set."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.arrived = asyncio.Event()
        self.proceed = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            self.arrived.set()
            await self.proceed.wait()
        return await self.inner.handle_async_request(request)


def in_use(gate: Gate, scope: str) -> int:
    return next(int(item["in_use"]) for item in gate.usage()["layers"]
                if item["layer"] == "number" and item["scope"] == scope)


# acquire / renew / release -----------------------------------------------------------
async def test_acquire_returns_a_typed_admitted_decision(gate: Gate, clock: FakeClock) -> None:
    """An admitted answer parses into a GateDecision with its lease, keys and expiry."""
    async with open_client(gate) as client:
        decision = await client.acquire("c1", "inbound", INBOUND, remote="+15550001111")
    assert decision.admitted and decision.outcome is Outcome.ADMITTED
    assert (decision.layer, decision.scope, decision.reason) == (
        Layer.NUMBER, INBOUND, Reason.ADMITTED)
    assert decision.lease is not None
    assert dict(decision.lease.keys) == {"llm": "key-a"}
    assert decision.lease.expires_at == clock.now + 30.0
    assert decision.lease.ttl_s == 30.0 and decision.queue is None


async def test_renew_and_release_round_trip(gate: Gate, clock: FakeClock) -> None:
    """renew pushes the expiry to now + ttl; release is idempotent; renew then raises lost."""
    async with open_client(gate) as client:
        await client.acquire("c1", "inbound", INBOUND)
        clock.advance(10)
        lease = await client.renew("c1")
        assert lease.expires_at == clock.now + 30.0
        assert await client.release("c1") == {"released": True, "cancelled": False}
        assert await client.release("c1") == {"released": False, "cancelled": False}
        with pytest.raises(LeaseLostError) as lost:
            await client.renew("c1")
    assert lost.value.status == "ended" and lost.value.status_code == 404


async def test_request_errors_map_to_callgate_errors(gate: Gate) -> None:
    """409 is CallConflictError, 404 UnknownNumberError, 422 a GateHTTPError naming the field."""
    async with open_client(gate) as client:
        await client.acquire("c1", "inbound", INBOUND)
        with pytest.raises(CallConflictError, match="c1"):
            await client.acquire("c1", "inbound", INBOUND, priority=5)
        with pytest.raises(UnknownNumberError, match=r"\+19995550000"):
            await client.acquire("c2", "inbound", "+19995550000")
        with pytest.raises(GateHTTPError, match=r"body\.direction") as bad:
            await client.acquire("c3", "sideways", INBOUND)  # type: ignore[arg-type]
    assert bad.value.status_code == 422


async def test_token_is_sent_as_bearer() -> None:
    """A token goes out as ``Authorization: Bearer <token>``; none means no header."""
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"released": False, "cancelled": False})

    for token in ("s3cret", None):
        async with GateClient("http://gate", token, transport=httpx.MockTransport(answer)) as c:
            await c.release("c1")
    assert seen == ["Bearer s3cret", None]


DECISION = {"call_id": "c1", "decision": "rejected", "layer": "queue", "scope": INBOUND,
            "reason": "queue_full", "lease": None, "queue": None, "retry_after_s": 300.0,
            "message": "busy"}


@pytest.mark.parametrize(("body", "fragment"), [
    ("<html>oops</html>", "not JSON"),
    ({**DECISION, "decision": "maybe"}, "decision = 'maybe'"),
    ({k: v for k, v in DECISION.items() if k != "reason"}, "no 'reason' field"),
    ({**DECISION, "decision": "admitted"}, "lease = None"),
    ({**DECISION, "retry_after_s": "soon"}, "retry_after_s = 'soon'"),
    ({**DECISION, "call_id": "other"}, "'other'"),
])
async def test_malformed_answer_raises_protocol_error(body: object, fragment: str) -> None:
    """An answer the client cannot read raises GateProtocolError naming the field and value."""
    content = body if isinstance(body, str) else json.dumps(body)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text=content))
    async with GateClient("http://gate", transport=transport) as client:
        with pytest.raises(GateProtocolError, match=fragment):
            await client.acquire("c1", "inbound", INBOUND)


async def test_store_down_is_unavailable_not_protocol_error() -> None:
    """A 503 (store down) or a network error raises GateUnavailableError: retrying may help."""
    transport = httpx.MockTransport(lambda request: httpx.Response(
        503, json={"detail": "store unavailable; retry shortly"}))
    async with GateClient("http://gate", transport=transport) as client:
        with pytest.raises(GateUnavailableError, match="503") as down:
            await client.renew("c1")
    assert down.value.status_code == 503

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with GateClient("http://gate", transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(GateUnavailableError, match="cannot reach"):
            await client.release("c1")


# call(): leases, renewals, release -----------------------------------------------------
async def test_renewals_keep_the_lease_alive_past_its_ttl(gate: Gate, clock: FakeClock) -> None:
    """Inside call() the lease is renewed every ttl/3, so it outlives its first expiry."""
    sleep = FakeSleep(clock)
    start = clock.now
    async with open_client(gate, sleep=sleep) as client, \
            client.call("c1", "inbound", INBOUND) as lease:
        first_expiry = lease.expires_at
        await sleep.until(5)  # the renewer sleeps again only after each renewal
        assert lease.renewals >= 4
        assert clock.now - start >= 40.0 > 30.0  # past the first expiry in gate time
        assert gate.expire() == 0 and in_use(gate, INBOUND) == 1
        assert lease.expires_at > first_expiry and not lease.lost.is_set()
    assert set(sleep.slept) == {10.0}  # ttl_s / 3


async def test_renewals_run_on_the_real_event_loop_clock(clock: FakeClock) -> None:
    """With the default sleep a 0.3 s lease is renewed about every 0.1 s of wall time."""
    gate = memory_gate(make_stack(lease_ttl="0.3s"), clock)
    sleep = FakeSleep(clock, real=True)
    async with open_client(gate, sleep=sleep) as client, \
            client.call("c1", "inbound", INBOUND) as lease:
        await sleep.until(3)
        assert lease.renewals >= 2 and not lease.lost.is_set()
    assert sleep.slept[:3] == pytest.approx([0.1, 0.1, 0.1])


async def test_normal_exit_releases(gate: Gate) -> None:
    """Leaving the block normally releases the call and frees its slots."""
    async with open_client(gate) as client:
        async with client.call("c1", "inbound", INBOUND) as lease:
            assert in_use(gate, INBOUND) == 1 and dict(lease.keys) == {"llm": "key-a"}
        assert in_use(gate, INBOUND) == 0
    assert gate.renew("c1").status is RenewStatus.ENDED


async def test_exception_in_block_releases_and_propagates(gate: Gate) -> None:
    """An exception inside the block still releases the call and reaches the caller unchanged."""
    async with open_client(gate) as client:
        with pytest.raises(RuntimeError, match="pipeline crashed"):
            async with client.call("c1", "inbound", INBOUND):
                raise RuntimeError("pipeline crashed")
    assert in_use(gate, INBOUND) == 0
    assert gate.renew("c1").status is RenewStatus.ENDED


async def test_cancelling_the_task_releases(gate: Gate) -> None:
    """Cancelling the task running the block releases the call before the task ends."""
    entered = asyncio.Event()

    async def agent(client: GateClient) -> None:
        async with client.call("c1", "inbound", INBOUND):
            entered.set()
            await asyncio.Event().wait()  # the call runs until hung up

    async with open_client(gate) as client:
        task = asyncio.create_task(agent(client))
        async with asyncio.timeout(5):
            await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert in_use(gate, INBOUND) == 0
    assert gate.renew("c1").status is RenewStatus.ENDED


async def test_release_survives_a_second_cancellation(gate: Gate) -> None:
    """A task cancelled again while its call is being released still releases, then ends."""
    entered = asyncio.Event()
    held: list[HeldReleases] = []

    def hold(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        held.append(HeldReleases(inner))
        return held[0]

    async def agent(client: GateClient) -> None:
        async with client.call("c1", "inbound", INBOUND):
            entered.set()
            await asyncio.Event().wait()

    async with open_client(gate, wrap=hold) as client:
        task = asyncio.create_task(agent(client))
        async with asyncio.timeout(5):
            await entered.wait()
            task.cancel()
            await held[0].arrived.wait()
        task.cancel()  # e.g. a shutdown timeout firing while the release is in flight
        await asyncio.sleep(0)
        assert not task.done()
        held[0].proceed.set()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert in_use(gate, INBOUND) == 0


async def test_renew_404_sets_lost(gate: Gate, clock: FakeClock,
                                   caplog: pytest.LogCaptureFixture) -> None:
    """A renew that finds the lease expired sets ``lost`` and logs a warning; exit still works."""
    sleep = FakeSleep(clock, factor=4.0)  # the worker stalls past the ttl between renewals
    async with open_client(gate, sleep=sleep) as client:
        async with client.call("c1", "inbound", INBOUND) as lease:
            async with asyncio.timeout(5):
                await lease.lost.wait()
            assert lease.lost_status == "expired" and lease.renewals == 0
        assert in_use(gate, INBOUND) == 0
    assert any("lease lost" in r.message and r.levelno == logging.WARNING
               for r in caplog.records)


async def test_transient_renew_failure_is_retried(gate: Gate, clock: FakeClock) -> None:
    """A renew that cannot reach the gate is retried at the next tick; the lease is kept."""
    sleep = FakeSleep(clock)
    async with open_client(gate, sleep=sleep,
                           wrap=lambda inner: FailingRenews(inner, count=1)) as client, \
            client.call("c1", "inbound", INBOUND) as lease:
        await sleep.until(3)  # tick 1 fails, tick 2 renews
        assert lease.renewals >= 1 and not lease.lost.is_set()


async def test_renew_failing_for_a_whole_ttl_sets_lost(gate: Gate, clock: FakeClock) -> None:
    """When renewals fail for a whole ttl the lease has expired at the gate: ``lost`` is set."""
    sleep = FakeSleep(clock)
    async with open_client(gate, sleep=sleep,
                           wrap=lambda inner: FailingRenews(inner, count=1000)) as client, \
            client.call("c1", "inbound", INBOUND) as lease:
        async with asyncio.timeout(5):
            await lease.lost.wait()
        assert lease.lost_status == "expired" and sleep.slept == [10.0, 10.0, 10.0]


# call(): queue, retries, refusals ----------------------------------------------------------
async def test_queued_call_polls_until_promoted(gate: Gate) -> None:
    """A queued call is polled every min(poll_interval_s, estimated wait) until promoted."""
    async with open_client(gate) as other:
        await other.acquire("first", "inbound", INBOUND)

        async def release_first(sleeps: int) -> None:
            if sleeps == 2:
                await other.release("first")

        sleep = FakeSleep(FakeClock(), hook=release_first)  # the gate's clock stays put
        async with open_client(gate, sleep=sleep, poll_interval_s=2.0) as client:
            queued = await client.acquire("second", "inbound", INBOUND)
            assert queued.outcome is Outcome.QUEUED and queued.queue is not None
            assert queued.queue.position == 1 and queued.message == HOLD
            assert queued.queue.estimated_wait_s > 2.0
            async with client.call("second", "inbound", INBOUND) as lease:
                assert sleep.slept[:2] == [2.0, 2.0]
                assert lease.decision.reason is Reason.PROMOTED
                assert lease.decision.layer is Layer.QUEUE
                assert in_use(gate, INBOUND) == 1


async def test_poll_sleeps_the_estimate_when_shorter(gate: Gate) -> None:
    """With a long poll interval, a queued call sleeps its estimated wait instead."""
    async with open_client(gate) as other:
        await other.acquire("first", "inbound", INBOUND)

        async def release_first(sleeps: int) -> None:
            await other.release("first")

        sleep = FakeSleep(FakeClock(), hook=release_first)
        async with open_client(gate, sleep=sleep, poll_interval_s=1000.0) as client:
            queued = await client.acquire("second", "inbound", INBOUND)
            assert queued.queue is not None
            async with client.call("second", "inbound", INBOUND) as lease:
                assert sleep.slept[0] == queued.queue.estimated_wait_s
                assert lease.decision.reason is Reason.PROMOTED


async def test_max_wait_gives_up_and_cancels_the_queue_entry(gate: Gate) -> None:
    """Past max_wait_s a queued call raises CallNotAdmitted(queued) and leaves the queue."""
    sleep = FakeSleep(FakeClock())
    async with open_client(gate, sleep=sleep, poll_interval_s=2.0) as client:
        await client.acquire("first", "inbound", INBOUND)
        with pytest.raises(CallNotAdmitted) as refused:
            async with client.call("second", "inbound", INBOUND, max_wait_s=5.0):
                pytest.fail("the block must not run for a call that was not admitted")
    assert sleep.slept == [2.0, 2.0, 1.0]
    assert refused.value.outcome is Outcome.QUEUED and refused.value.message == HOLD
    assert gate.queue() == []


async def test_wait_false_does_not_wait_in_the_queue(gate: Gate) -> None:
    """With wait=False a queued answer raises at once and the queue entry is cancelled."""
    sleep = FakeSleep(FakeClock())
    async with open_client(gate, sleep=sleep) as client:
        await client.acquire("first", "inbound", INBOUND)
        with pytest.raises(CallNotAdmitted) as refused:
            async with client.call("second", "inbound", INBOUND, wait=False):
                pytest.fail("not admitted")
    assert refused.value.outcome is Outcome.QUEUED and sleep.slept == []
    assert gate.queue() == []


async def test_cancel_while_queued_leaves_the_queue(gate: Gate) -> None:
    """Cancelling a task that waits in the queue cancels its queue entry at the gate."""
    polled = asyncio.Event()

    async def stall(seconds: float) -> None:
        polled.set()
        await asyncio.Event().wait()

    async with open_client(gate, sleep=stall) as client:
        await client.acquire("first", "inbound", INBOUND)

        async def agent() -> None:
            async with client.call("second", "inbound", INBOUND):
                pytest.fail("not admitted")

        task = asyncio.create_task(agent())
        async with asyncio.timeout(5):
            await polled.wait()
        assert [e["call_id"] for e in gate.queue()] == ["second"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert gate.queue() == []


async def test_retry_honours_retry_after_s(gate: Gate, clock: FakeClock) -> None:
    """With retry=True a retry_later sleeps exactly retry_after_s, then asks again and wins."""
    sleep = FakeSleep(clock)
    async with open_client(gate, sleep=sleep) as client:
        await client.acquire("dial-1", "outbound", PACED)
        await client.release("dial-1")  # the 1-per-minute window still counts it
        clock.advance(15.0)
        async with client.call("dial-2", "outbound", PACED, retry=True) as lease:
            assert sleep.slept[0] == pytest.approx(45.0)
            assert lease.decision.reason is Reason.ADMITTED


async def test_retry_counts_attempts_until_rejected(gate: Gate) -> None:
    """Retries send attempt+1 with backoff; the final rejection is carried by CallNotAdmitted."""
    sleep = FakeSleep(FakeClock())  # the gate's clock stays put: "busy" keeps its lease
    async with open_client(gate, sleep=sleep) as client:
        await client.acquire("busy", "outbound", SINGLE)
        with pytest.raises(CallNotAdmitted) as refused:
            async with client.call("dial", "outbound", SINGLE, retry=True):
                pytest.fail("not admitted")
    assert sleep.slept == [10.0, 20.0]  # retry_base * 2^(attempt-1), attempts 1 and 2
    error = refused.value
    assert error.decision.outcome is Outcome.REJECTED and error.reason is Reason.MAX_ATTEMPTS
    assert (error.layer, error.scope) == (Layer.NUMBER, SINGLE)
    assert error.message is not None and "3 attempt" in error.message


async def test_retry_later_without_retry_raises_with_retry_after(gate: Gate) -> None:
    """With retry=False a retry_later raises at once, carrying retry_after_s for a reschedule."""
    sleep = FakeSleep(FakeClock())
    async with open_client(gate, sleep=sleep) as client:
        await client.acquire("busy", "outbound", SINGLE)
        with pytest.raises(CallNotAdmitted) as refused:
            async with client.call("dial", "outbound", SINGLE):
                pytest.fail("not admitted")
    assert refused.value.outcome is Outcome.RETRY_LATER
    assert refused.value.reason is Reason.CAPACITY and refused.value.retry_after_s == 10.0
    assert sleep.slept == []


async def test_retry_stops_when_the_next_wait_passes_max_wait(gate: Gate) -> None:
    """A retry whose retry_after_s would pass max_wait_s is not slept: the call is refused."""
    sleep = FakeSleep(FakeClock())
    async with open_client(gate, sleep=sleep) as client:
        await client.acquire("busy", "outbound", SINGLE)
        with pytest.raises(CallNotAdmitted) as refused:
            async with client.call("dial", "outbound", SINGLE, retry=True, max_wait_s=15.0):
                pytest.fail("not admitted")
    assert sleep.slept == [10.0] and refused.value.outcome is Outcome.RETRY_LATER
