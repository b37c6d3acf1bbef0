"""GateClient: ask a callgate service whether a call may start, and hold its lease while it runs.

An agent worker (pipecat, LiveKit Agents, a Twilio media-stream handler) asks the gate
*before* it connects the caller, keeps the lease alive with a heartbeat while the call
runs, and releases it when the call ends, however it ends::

    from callgate.client import CallNotAdmitted, GateClient

    gate = GateClient("http://127.0.0.1:8080", token=os.environ.get("CALLGATE_TOKEN"))

    async def main() -> None:
        async with gate:  # one client (one connection pool) for the worker's lifetime
            await serve_calls(on_incoming_call)  # your telephony loop

    async def on_incoming_call(call_sid: str, to_number: str, from_number: str) -> None:
        try:  # every refusal, the gate's or an unreachable gate, is a CallNotAdmitted
            async with gate.call(call_sid, "inbound", to_number, remote=from_number,
                                 max_wait_s=90) as lease:
                # lease.keys == {"openai-realtime": "key-b", ...}: open each provider's
                # session with that key alias. The lease is renewed every ttl/3 meanwhile.
                agent = asyncio.create_task(run_agent(lease.keys))  # pipecat runner.run(task),
                lost = asyncio.create_task(lease.lost.wait())      # or a LiveKit AgentSession
                await asyncio.wait({agent, lost}, return_when=asyncio.FIRST_COMPLETED)
                for task in (agent, lost):  # if the lease was lost, the gate no longer
                    task.cancel()           # counts this call: hang up
        except CallNotAdmitted as refused:  # never silence: tell the caller why
            await say(refused.message or "We cannot take your call right now.")
            if refused.retry_after_s is not None:
                schedule_callback(from_number, after_s=refused.retry_after_s)

A media worker that takes over a call a webhook admitted uses ``adopt`` instead of
``call``: ``async with gate.adopt(call_sid) as lease:`` renews the webhook's lease to the
stack's ``lease_ttl`` (so a crashed worker frees its slots within one TTL), keeps it alive
and releases it on exit. :class:`callgate.client_sync.SyncGateClient` offers the same
methods without asyncio, for dialler scripts and Flask or Django apps.

The picture is a restaurant with a host: ``acquire`` asks for a table (``admitted``,
``queued`` at the bar with a position and an estimated wait, ``retry_later`` for a
booking, ``rejected``); ``call()`` waits at the bar for you, checks in with the host every
``ttl/3`` while you eat (``renew``), and always gives the table back (``release``), even
when you leave in a hurry (an exception, or your task being cancelled).

Errors, and who is at fault::

    CallgateError (callgate.errors)
    ├── CallNotAdmitted        the gate said no (or not yet, past max_wait_s), or it could not
    │                          be reached (reason gate_unreachable): carries the decision
    ├── GateProtocolError      the gate's answer could not be read: a server bug or version skew
    ├── GateHTTPError          the gate refused the request (status_code, detail): fix the request
    │   └── LeaseLostError     a renew found no lease (status unknown/expired/ended/queued): hang up
    ├── GateUnavailableError   the gate could not be reached, timed out or answered 5xx: retry later
    ├── CallConflictError      (409) the call id was used before with a different body
    └── UnknownNumberError     (404 on acquire) the number is not in the gate's stack

Times are seconds (floats); ``expires_at`` is epoch seconds on the *gate's* clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import httpx

from callgate.client_pacing import AdmitPacing, RenewPacing, connect_retries
from callgate.client_wire import (
    Ask,
    CallNotAdmitted,
    GateDecision,
    GateHTTPError,
    GateLease,
    GateProtocolError,
    GateQueue,
    GateUnavailableError,
    HeldLease,
    LeaseLostError,
    acquire_body,
    adopted,
    call_path,
    checked,
    client_headers,
    not_admitted_lost,
    not_admitted_unreachable,
    query,
    read_decision,
    read_lease_ttl,
    read_release,
    read_renewal,
    unreachable_error,
)
from callgate.errors import CallConflictError, UnknownNumberError
from callgate.model import DEFAULT_OVERFLOW_MESSAGE, Direction, Outcome

__all__ = [
    "ActiveLease",
    "CallNotAdmitted",
    "GateClient",
    "GateDecision",
    "GateHTTPError",
    "GateLease",
    "GateProtocolError",
    "GateQueue",
    "GateUnavailableError",
    "LeaseLostError",
    "Sleep",
    "SyncGateClient",
]

log = logging.getLogger("callgate.client")

Sleep = Callable[[float], Awaitable[None]]
"""Waits the given number of seconds; ``asyncio.sleep`` unless a test injects its own."""


class ActiveLease(HeldLease):
    """The lease of a call inside :meth:`GateClient.call` or :meth:`GateClient.adopt`.

    ``lost`` (an :class:`asyncio.Event`) is set when the gate says the lease is gone (a
    renew answered 404), or when renewals kept failing for a whole TTL: the gate no longer
    counts the call, so the agent should hang up. ``renewals`` counts successful renewals.
    """

    lost: asyncio.Event

    def __init__(self, decision: GateDecision) -> None:
        super().__init__(decision)
        self.lost = asyncio.Event()


# the client --------------------------------------------------------------------------
class GateClient:
    """An async HTTP client of the callgate service; use it as ``async with client:``.

    ``transport`` is any httpx async transport (tests pass ``httpx.ASGITransport``);
    ``token`` is sent as ``Authorization: Bearer``. ``sleep`` is how the client waits
    between polls, retries and renewals (inject one to test without wall-clock waits);
    ``poll_interval_s`` is the longest pause between two polls of a queued call.
    A request that cannot connect is retried with backoff for ``connect_retry_s``;
    ``unreachable_message`` is what :class:`CallNotAdmitted` carries when the gate could
    not be reached at all (say your stack's ``overflow_message``).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        poll_interval_s: float = 2.0,
        connect_retry_s: float = 2.0,
        unreachable_message: str = DEFAULT_OVERFLOW_MESSAGE,
    ) -> None:
        headers = client_headers(token, poll_interval_s, connect_retry_s)
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers,
                                       timeout=httpx.Timeout(timeout_s), transport=transport)
        self._sleep = sleep
        self.poll_interval_s = poll_interval_s
        self.connect_retry_s = connect_retry_s
        self.unreachable_message = unreachable_message

    async def __aenter__(self) -> GateClient:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        await self._http.aclose()

    # the endpoints ---------------------------------------------------------------------
    async def acquire(
        self,
        call_id: str,
        direction: Direction,
        number: str,
        *,
        remote: str | None = None,
        priority: int = 0,
        attempt: int = 1,
        providers: Sequence[str] | None = None,
        resources: Mapping[str, int] | None = None,
        ttl_s: float | None = None,
    ) -> GateDecision:
        """Ask once whether the call may start (``POST /v1/calls``); polling = asking again.

        ``ttl_s`` sets the lease's TTL (default: the stack's ``lease_ttl``; an outbound
        lease first lives ``dial_ttl``, the ring time). Raises CallConflictError (same id,
        different body), UnknownNumberError, GateHTTPError, GateUnavailableError or
        GateProtocolError; a full layer is a decision, not an error.
        """
        body = acquire_body(call_id, direction, number, remote=remote, priority=priority,
                            attempt=attempt, providers=providers, resources=resources,
                            ttl_s=ttl_s)
        return read_decision(await self._send("POST", "/v1/calls", json=body), call_id)

    async def renew(self, call_id: str, ttl_s: float | None = None,
                    account: str | None = None, *,
                    connect_retry: bool = True) -> GateLease:
        """Push the lease's expiry one TTL further; raises LeaseLostError when it is gone.

        ``ttl_s`` replaces the lease's TTL from now on (a media worker taking over a
        webhook's long lease passes the stack's ``lease_ttl``); ``account`` is for admin
        tokens acting on one account's call id.
        """
        response = await self._send("POST", call_path(call_id, "/renew"),
                                    params=query(ttl_s=ttl_s, account=account),
                                    connect_retry=connect_retry)
        return read_renewal(response, call_id)

    async def release(self, call_id: str, account: str | None = None, *,
                      connect_retry: bool = True) -> dict[str, bool]:
        """Free the lease or cancel the queued call (idempotent): ``{"released", "cancelled"}``."""
        response = await self._send("DELETE", call_path(call_id), params=query(account=account),
                                    connect_retry=connect_retry)
        return read_release(response)

    async def lease_ttl(self) -> float:
        """The stack's ``lease_ttl`` in seconds (``GET /v1/settings``)."""
        return read_lease_ttl(await self._send("GET", "/v1/settings"))

    # the context managers --------------------------------------------------------------
    @asynccontextmanager
    async def call(
        self,
        call_id: str,
        direction: Direction,
        number: str,
        *,
        remote: str | None = None,
        priority: int = 0,
        attempt: int = 1,
        providers: Sequence[str] | None = None,
        resources: Mapping[str, int] | None = None,
        ttl_s: float | None = None,
        wait: bool = True,
        retry: bool = False,
        max_wait_s: float | None = None,
        renew_interval_s: float | None = None,
    ) -> AsyncIterator[ActiveLease]:
        """Hold a lease for the block's duration; raise :class:`CallNotAdmitted` otherwise.

        While the call is ``queued`` (and ``wait``), polls every
        ``min(poll_interval_s, estimated_wait_s)``; with ``retry``, a ``retry_later``
        sleeps ``retry_after_s`` and asks again with ``attempt + 1``. ``max_wait_s``
        bounds the total time spent sleeping in both. A queued call given up on is
        cancelled at the gate. A gate that cannot be reached (after ``connect_retry_s``
        of retries) is a :class:`CallNotAdmitted` too, reason ``gate_unreachable``.
        Inside the block the lease is renewed every ``ttl_s / 3`` (or
        ``renew_interval_s``, e.g. ``ttl_s / (3 * K)`` against ``serve --time-scale K``);
        on exit, however it happens, renewal stops and the call is released.
        """
        ask = Ask(call_id, direction, number, remote, priority, attempt,
                  tuple(providers) if providers is not None else None,
                  dict(resources) if resources is not None else None, ttl_s)
        try:
            decision = await self._admit(ask, AdmitPacing(
                attempt, wait=wait, retry=retry, max_wait_s=max_wait_s,
                poll_interval_s=self.poll_interval_s))
        except (CallConflictError, UnknownNumberError, GateHTTPError):
            raise  # the gate recorded nothing for this body: nothing to release
        except GateUnavailableError as exc:
            # A request may have reached the gate before the answer was lost: free what
            # it may hold, once, without waiting out another round of connect retries.
            await _finish(self._release_logged(call_id, connect_retry=False))
            raise not_admitted_unreachable(call_id, self.unreachable_message, exc) from exc
        except BaseException:
            # Cancelled or cut off mid-request: the gate may hold a lease or queue entry.
            await _finish(self._release_logged(call_id))
            raise
        if not decision.admitted:
            if decision.outcome is Outcome.QUEUED:
                await _finish(self._release_logged(call_id))
            raise CallNotAdmitted(decision)
        async with self._holding(ActiveLease(decision), renew_interval_s) as lease:
            yield lease

    @asynccontextmanager
    async def adopt(
        self,
        call_id: str,
        *,
        ttl_s: float | None = None,
        account: str | None = None,
        renew_interval_s: float | None = None,
    ) -> AsyncIterator[ActiveLease]:
        """Take over a lease someone else created (a voice webhook) for the block's duration.

        On entry the lease is renewed with ``ttl_s`` (default: the stack's ``lease_ttl``,
        as the webhook's ``renew_url`` does), so a worker that dies frees the call's slots
        within one TTL; then it is renewed every ``ttl / 3`` and released on exit,
        exception or cancellation, like :meth:`call`. A lease that is already gone, or a
        gate that cannot be reached, is a :class:`CallNotAdmitted` (reason ``call_ended``
        or ``gate_unreachable``).
        """
        try:
            ttl = ttl_s if ttl_s is not None else await self.lease_ttl()
            lease = await self.renew(call_id, ttl, account)
        except LeaseLostError as exc:
            raise not_admitted_lost(call_id, exc) from exc
        except GateUnavailableError as exc:
            raise not_admitted_unreachable(call_id, self.unreachable_message, exc) from exc
        async with self._holding(ActiveLease(adopted(call_id, lease)), renew_interval_s,
                                 account) as held:
            yield held

    @asynccontextmanager
    async def _holding(self, lease: ActiveLease, renew_interval_s: float | None,
                       account: str | None = None) -> AsyncIterator[ActiveLease]:
        """Renew ``lease`` in the background while the block runs; release it after."""
        renewer = asyncio.create_task(self._renew_loop(lease, renew_interval_s, account),
                                      name=f"callgate-renew-{lease.call_id}")
        try:
            yield lease
        finally:
            await _finish(self._end(renewer, lease.call_id, account))

    async def _admit(self, ask: Ask, pacing: AdmitPacing) -> GateDecision:
        while True:
            decision = await self.acquire(
                ask.call_id, ask.direction, ask.number, remote=ask.remote,
                priority=ask.priority, attempt=pacing.attempt, providers=ask.providers,
                resources=ask.resources, ttl_s=ask.ttl_s)
            pause = pacing.pause(decision)
            if pause is None:
                return decision
            log.debug("call %s %s (%s): next ask in %.3f s", ask.call_id, decision.outcome,
                      decision.reason, pause)
            await self._sleep(pause)

    async def _renew_loop(self, lease: ActiveLease, every_s: float | None,
                          account: str | None) -> None:
        """Renew every ``every_s`` (else ttl/3) until cancelled or the lease is lost."""
        pacing = RenewPacing(every_s)
        while True:
            interval_s = pacing.interval(lease.ttl_s)
            await self._sleep(interval_s)
            sent = time.monotonic()
            outcome: GateLease | Exception
            try:
                # The loop is its own retry: a tick that cannot connect waits for the next.
                outcome = await self.renew(lease.call_id, account=account, connect_retry=False)
            except Exception as exc:
                outcome = exc
            if lease.after_renew(outcome, sent, pacing, interval_s, log):
                return

    async def _end(self, renewer: asyncio.Task[None], call_id: str,
                   account: str | None) -> None:
        renewer.cancel()
        await asyncio.wait({renewer})
        await self._release_logged(call_id, account)

    async def _release_logged(self, call_id: str, account: str | None = None, *,
                              connect_retry: bool = True) -> None:
        try:
            await self.release(call_id, account, connect_retry=connect_retry)
        except Exception as exc:
            log.warning("call %s: release failed (%s); its slots return when the lease "
                        "expires", call_id, exc)

    # transport -------------------------------------------------------------------------
    async def _send(self, method: str, url: str, *, connect_retry: bool = True,
                    **kwargs: Any) -> httpx.Response:
        try:
            async for attempt in connect_retries(self.connect_retry_s if connect_retry else 0):
                with attempt:
                    response = await self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable_error(method, url, exc) from exc
        return checked(method, url, response)


async def _finish(cleanup: Awaitable[None]) -> None:
    """Run ``cleanup`` to the end even if this task is cancelled meanwhile, then re-raise.

    ``asyncio.shield`` alone would let the caller move on while the release is still in
    flight; here the caller waits (at most the client's timeout) and then sees its
    cancellation, so "the call is released" holds when the ``async with`` has exited.
    """
    task = asyncio.ensure_future(cleanup)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                break
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    if not task.cancelled():
        task.result()


from callgate.client_sync import SyncGateClient  # noqa: E402  (re-exported; no cycle)
