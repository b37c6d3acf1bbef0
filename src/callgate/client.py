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
        try:
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

The picture is a restaurant with a host: ``acquire`` asks for a table (``admitted``,
``queued`` at the bar with a position and an estimated wait, ``retry_later`` for a
booking, ``rejected``); ``call()`` waits at the bar for you, checks in with the host every
``ttl/3`` while you eat (``renew``), and always gives the table back (``release``), even
when you leave in a hurry (an exception, or your task being cancelled).

Errors, and who is at fault::

    CallgateError (callgate.errors)
    ├── CallNotAdmitted        the gate said no (or not yet, past max_wait_s): carries the decision
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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from callgate.client_wire import (
    CallNotAdmitted,
    GateDecision,
    GateHTTPError,
    GateLease,
    GateProtocolError,
    GateQueue,
    GateUnavailableError,
    LeaseLostError,
    as_object,
    detail_of,
    json_or_none,
    ok_json,
    parse_decision,
    parse_lease,
    quoted_id,
)
from callgate.errors import CallConflictError, UnknownNumberError
from callgate.model import Direction, Outcome

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
]

log = logging.getLogger("callgate.client")

Sleep = Callable[[float], Awaitable[None]]
"""Waits the given number of seconds; ``asyncio.sleep`` unless a test injects its own."""

MIN_POLL_S = 0.05
"""The shortest pause between two polls of a queued call, whatever the estimate says."""




class ActiveLease:
    """The lease of a call running inside :meth:`GateClient.call`, renewed in the background.

    ``lost`` is set when the gate says the lease is gone (a renew answered 404), or when
    renewals kept failing for a whole TTL: the gate no longer counts the call, so the
    agent should hang up. ``renewals`` counts successful renewals.
    """

    def __init__(self, decision: GateDecision) -> None:
        assert decision.lease is not None, "only an admitted decision has a lease"
        self.call_id = decision.call_id
        self.decision = decision
        self.lease: GateLease = decision.lease
        self.renewals = 0
        self.lost = asyncio.Event()
        self.lost_status: str | None = None

    @property
    def keys(self) -> Mapping[str, str]:
        """Provider pool -> the key alias the gate chose for this call."""
        return self.lease.keys

    @property
    def expires_at(self) -> float:
        """When the lease expires unless renewed (epoch seconds, the gate's clock)."""
        return self.lease.expires_at

    @property
    def ttl_s(self) -> float:
        return self.lease.ttl_s

    def _mark_lost(self, status: str) -> None:
        self.lost_status = status
        self.lost.set()


# the client --------------------------------------------------------------------------
class GateClient:
    """An async HTTP client of the callgate service; use it as ``async with client:``.

    ``transport`` is any httpx async transport (tests pass ``httpx.ASGITransport``);
    ``token`` is sent as ``Authorization: Bearer``. ``sleep`` is how the client waits
    between polls, retries and renewals (inject one to test without wall-clock waits);
    ``poll_interval_s`` is the longest pause between two polls of a queued call.
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
    ) -> None:
        if not poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be > 0 seconds, got {poll_interval_s}")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers,
                                       timeout=httpx.Timeout(timeout_s), transport=transport)
        self._sleep = sleep
        self.poll_interval_s = poll_interval_s

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

    # the three endpoints -------------------------------------------------------------
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
    ) -> GateDecision:
        """Ask once whether the call may start (``POST /v1/calls``); polling = asking again.

        Raises CallConflictError (same id, different body), UnknownNumberError,
        GateHTTPError, GateUnavailableError or GateProtocolError; a full layer is a
        decision, not an error.
        """
        body: dict[str, Any] = {"call_id": call_id, "direction": direction, "number": number,
                                "priority": priority, "attempt": attempt}
        if remote is not None:
            body["remote"] = remote
        if providers is not None:
            body["providers"] = list(providers)
        if resources is not None:
            body["resources"] = dict(resources)
        response = await self._send("POST", "/v1/calls", json=body)
        if response.status_code == 409:
            raise CallConflictError(detail_of(response))
        if response.status_code == 404:
            raise UnknownNumberError(detail_of(response))
        decision = parse_decision(ok_json(response))
        if decision.call_id != call_id:
            raise GateProtocolError(f"asked about call_id {call_id!r}, the gate answered about "
                                    f"{decision.call_id!r}", status_code=200)
        return decision

    async def renew(self, call_id: str) -> GateLease:
        """Push the lease's expiry one TTL further; raises LeaseLostError when it is gone."""
        response = await self._send("POST", f"/v1/calls/{quoted_id(call_id)}/renew")
        if response.status_code == 404:
            status = "unknown"
            payload = json_or_none(response)
            if isinstance(payload, dict) and isinstance(payload.get("status"), str):
                status = payload["status"]
            raise LeaseLostError(call_id, status, detail_of(response))
        data = as_object(ok_json(response), "answer")
        if data.get("call_id") != call_id:
            raise GateProtocolError(f"renew of {call_id!r}: answer has call_id = "
                                    f"{data.get('call_id')!r}", status_code=200)
        lease = parse_lease(data.get("lease"), "lease")
        if lease is None:
            raise GateProtocolError("renew answer: lease = None: expected a lease object",
                                    status_code=200)
        return lease

    async def release(self, call_id: str) -> dict[str, bool]:
        """Free the lease or cancel the queued call (idempotent): ``{"released", "cancelled"}``."""
        response = await self._send("DELETE", f"/v1/calls/{quoted_id(call_id)}")
        data = as_object(ok_json(response), "answer")
        result = {}
        for name in ("released", "cancelled"):
            value = data.get(name)
            if not isinstance(value, bool):
                raise GateProtocolError(f"release answer: {name} = {value!r}: expected a bool",
                                        status_code=200)
            result[name] = value
        return result

    # the context manager ---------------------------------------------------------------
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
        cancelled at the gate. Inside the block the lease is renewed every ``ttl_s / 3``
        (or ``renew_interval_s``, e.g. ``ttl_s / (3 * K)`` against ``serve --time-scale K``);
        on exit, however it happens, renewal stops and the call is released.
        """
        ask = _Ask(call_id, direction, number, remote, priority, attempt,
                   tuple(providers) if providers is not None else None,
                   dict(resources) if resources is not None else None)
        try:
            decision = await self._admit(ask, wait=wait, retry=retry, max_wait_s=max_wait_s)
        except (CallConflictError, UnknownNumberError, GateHTTPError):
            raise  # the gate recorded nothing for this body: nothing to release
        except BaseException:
            # Cancelled or cut off mid-request: the gate may hold a lease or queue entry.
            await _finish(self._release_logged(call_id))
            raise
        if not decision.admitted:
            if decision.outcome is Outcome.QUEUED:
                await _finish(self._release_logged(call_id))
            raise CallNotAdmitted(decision)
        lease = ActiveLease(decision)
        renewer = asyncio.create_task(self._renew_loop(lease, renew_interval_s),
                                      name=f"callgate-renew-{call_id}")
        try:
            yield lease
        finally:
            await _finish(self._end(renewer, call_id))

    async def _admit(
        self, ask: _Ask, *, wait: bool, retry: bool, max_wait_s: float | None
    ) -> GateDecision:
        waited_s = 0.0
        attempt = ask.attempt
        while True:
            decision = await self.acquire(
                ask.call_id, ask.direction, ask.number, remote=ask.remote,
                priority=ask.priority, attempt=attempt, providers=ask.providers,
                resources=ask.resources)
            if decision.outcome is Outcome.QUEUED and wait:
                assert decision.queue is not None  # checked by the parser
                pause = max(MIN_POLL_S,
                            min(self.poll_interval_s, decision.queue.estimated_wait_s))
            elif decision.outcome is Outcome.RETRY_LATER and retry:
                pause = decision.retry_after_s or 0.0
                attempt += 1
            else:
                return decision
            if max_wait_s is not None:
                left = max_wait_s - waited_s
                if left <= 0 or (decision.outcome is Outcome.RETRY_LATER and pause > left):
                    return decision
                pause = min(pause, left)
            log.debug("call %s %s (%s): next ask in %.3f s", ask.call_id, decision.outcome,
                      decision.reason, pause)
            await self._sleep(pause)
            waited_s += pause

    async def _renew_loop(self, lease: ActiveLease, every_s: float | None) -> None:
        """Renew every ``every_s`` (else ttl/3) until cancelled or the lease is lost.

        A failure that is not a 404 (network, 5xx, an unreadable answer) is logged and
        retried at the next tick; once failures have spanned a whole TTL the lease has
        expired at the gate, so it is marked lost.
        """
        failed_s = 0.0
        while True:
            interval_s = every_s or lease.ttl_s / 3
            await self._sleep(interval_s)
            try:
                lease.lease = await self.renew(lease.call_id)
            except LeaseLostError as exc:
                log.warning("call %s: lease lost (%s): the gate no longer counts this call; "
                            "hang up", lease.call_id, exc.status)
                lease._mark_lost(exc.status)
                return
            except (GateUnavailableError, GateProtocolError, GateHTTPError) as exc:
                failed_s += interval_s
                log.warning("call %s: renew failed (%s); retrying in %.3f s",
                            lease.call_id, exc, interval_s)
            except Exception:
                failed_s += interval_s
                log.exception("call %s: renew failed unexpectedly; retrying in %.3f s",
                              lease.call_id, interval_s)
            else:
                lease.renewals += 1
                failed_s = 0.0
                continue
            if failed_s >= lease.ttl_s:
                log.warning("call %s: no renewal for %.3f s (ttl %.3f s): the lease has "
                            "expired at the gate; hang up", lease.call_id, failed_s, lease.ttl_s)
                lease._mark_lost("expired")
                return

    async def _end(self, renewer: asyncio.Task[None], call_id: str) -> None:
        renewer.cancel()
        await asyncio.wait({renewer})
        await self._release_logged(call_id)

    async def _release_logged(self, call_id: str) -> None:
        try:
            await self.release(call_id)
        except Exception as exc:
            log.warning("call %s: release failed (%s); its slots return when the lease "
                        "expires", call_id, exc)

    # transport -------------------------------------------------------------------------
    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise GateUnavailableError(f"{method} {url}: the gate did not answer in time "
                                       f"({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise GateUnavailableError(f"{method} {url}: cannot reach the gate "
                                       f"({type(exc).__name__}: {exc})") from exc
        if response.status_code >= 500:
            raise GateUnavailableError(f"{method} {url}: gate answered HTTP "
                                       f"{response.status_code}: {detail_of(response)}",
                                       status_code=response.status_code)
        return response


@dataclass(frozen=True)
class _Ask:
    call_id: str
    direction: Direction
    number: str
    remote: str | None
    priority: int
    attempt: int
    providers: tuple[str, ...] | None
    resources: dict[str, int] | None


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

