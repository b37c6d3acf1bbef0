"""SyncGateClient: the gate's client for code without an event loop.

A dialler script, a Flask or Django view, or a worker thread uses it exactly like the
async :class:`callgate.client.GateClient` (same methods, same errors, same answers)::

    from callgate.client import CallNotAdmitted, SyncGateClient

    with SyncGateClient("http://127.0.0.1:8080") as gate:
        decision = gate.acquire("out-42", "outbound", caller_id, remote=callee)
        if decision.admitted:  # dial with a ring timeout <= dial_ttl; the webhooks take over
            twilio.calls.create(..., url=f"{GATE}/twilio/outbound?call_id=out-42")

The background heartbeat of :meth:`SyncGateClient.call` and :meth:`SyncGateClient.adopt`
runs in a daemon thread; ``lease.lost`` is a :class:`threading.Event`. Requests, answers
and timing come from :mod:`callgate.client_wire` and :mod:`callgate.client_pacing`,
shared with the async client.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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

log = logging.getLogger("callgate.client")


class SyncActiveLease(HeldLease):
    """The lease inside :meth:`SyncGateClient.call`/``adopt``; ``lost`` is a threading.Event."""

    lost: threading.Event

    def __init__(self, decision: GateDecision) -> None:
        super().__init__(decision)
        self.lost = threading.Event()


class SyncGateClient:
    """A blocking HTTP client of the callgate service; use it as ``with client:``.

    Arguments as :class:`callgate.client.GateClient`; ``transport`` is an httpx sync
    transport and ``sleep`` a blocking wait (``time.sleep`` unless a test injects one).
    One client may be shared by threads (httpx's ``Client`` is thread-safe).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval_s: float = 2.0,
        connect_retry_s: float = 2.0,
        unreachable_message: str = DEFAULT_OVERFLOW_MESSAGE,
    ) -> None:
        headers = client_headers(token, poll_interval_s, connect_retry_s)
        self._http = httpx.Client(base_url=base_url, headers=headers,
                                  timeout=httpx.Timeout(timeout_s), transport=transport)
        self._sleep = sleep
        self.poll_interval_s = poll_interval_s
        self.connect_retry_s = connect_retry_s
        self.unreachable_message = unreachable_message

    def __enter__(self) -> SyncGateClient:
        self._http.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._http.__exit__(exc_type, exc, tb)

    def close(self) -> None:
        self._http.close()

    # the endpoints ---------------------------------------------------------------------
    def acquire(
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
        """As :meth:`callgate.client.GateClient.acquire`."""
        body = acquire_body(call_id, direction, number, remote=remote, priority=priority,
                            attempt=attempt, providers=providers, resources=resources,
                            ttl_s=ttl_s)
        return read_decision(self._send("POST", "/v1/calls", json=body), call_id)

    def renew(self, call_id: str, ttl_s: float | None = None,
              account: str | None = None, *,
              connect_retry: bool = True) -> GateLease:
        """As :meth:`callgate.client.GateClient.renew`."""
        response = self._send("POST", call_path(call_id, "/renew"),
                              params=query(ttl_s=ttl_s, account=account),
                              connect_retry=connect_retry)
        return read_renewal(response, call_id)

    def release(self, call_id: str, account: str | None = None, *,
                connect_retry: bool = True) -> dict[str, bool]:
        """As :meth:`callgate.client.GateClient.release`."""
        response = self._send("DELETE", call_path(call_id), params=query(account=account),
                              connect_retry=connect_retry)
        return read_release(response)

    def lease_ttl(self) -> float:
        """The stack's ``lease_ttl`` in seconds (``GET /v1/settings``)."""
        return read_lease_ttl(self._send("GET", "/v1/settings"))

    # the context managers --------------------------------------------------------------
    @contextmanager
    def call(
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
    ) -> Iterator[SyncActiveLease]:
        """As :meth:`callgate.client.GateClient.call`, blocking."""
        ask = Ask(call_id, direction, number, remote, priority, attempt,
                  tuple(providers) if providers is not None else None,
                  dict(resources) if resources is not None else None, ttl_s)
        pacing = AdmitPacing(attempt, wait=wait, retry=retry, max_wait_s=max_wait_s,
                             poll_interval_s=self.poll_interval_s)
        try:
            decision = self._admit(ask, pacing)
        except (CallConflictError, UnknownNumberError, GateHTTPError):
            raise
        except GateUnavailableError as exc:
            self._release_logged(call_id, connect_retry=False)
            raise not_admitted_unreachable(call_id, self.unreachable_message, exc) from exc
        except BaseException:
            self._release_logged(call_id)
            raise
        if not decision.admitted:
            if decision.outcome is Outcome.QUEUED:
                self._release_logged(call_id)
            raise CallNotAdmitted(decision)
        with self._holding(SyncActiveLease(decision), renew_interval_s) as lease:
            yield lease

    @contextmanager
    def adopt(
        self,
        call_id: str,
        *,
        ttl_s: float | None = None,
        account: str | None = None,
        renew_interval_s: float | None = None,
    ) -> Iterator[SyncActiveLease]:
        """As :meth:`callgate.client.GateClient.adopt`, blocking."""
        try:
            ttl = ttl_s if ttl_s is not None else self.lease_ttl()
            lease = self.renew(call_id, ttl, account)
        except LeaseLostError as exc:
            raise not_admitted_lost(call_id, exc) from exc
        except GateUnavailableError as exc:
            raise not_admitted_unreachable(call_id, self.unreachable_message, exc) from exc
        with self._holding(SyncActiveLease(adopted(call_id, lease)), renew_interval_s,
                           account) as held:
            yield held

    @contextmanager
    def _holding(self, lease: SyncActiveLease, renew_interval_s: float | None,
                 account: str | None = None) -> Iterator[SyncActiveLease]:
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew_loop,
                                   args=(lease, renew_interval_s, account, stop),
                                   name=f"callgate-renew-{lease.call_id}", daemon=True)
        renewer.start()
        try:
            yield lease
        finally:
            stop.set()
            renewer.join()
            self._release_logged(lease.call_id, account)

    def _admit(self, ask: Ask, pacing: AdmitPacing) -> GateDecision:
        while True:
            decision = self.acquire(
                ask.call_id, ask.direction, ask.number, remote=ask.remote,
                priority=ask.priority, attempt=pacing.attempt, providers=ask.providers,
                resources=ask.resources, ttl_s=ask.ttl_s)
            pause = pacing.pause(decision)
            if pause is None:
                return decision
            self._sleep(pause)

    def _renew_loop(self, lease: SyncActiveLease, every_s: float | None,
                    account: str | None, stop: threading.Event) -> None:
        pacing = RenewPacing(every_s)
        while True:
            interval_s = pacing.interval(lease.ttl_s)
            if stop.wait(interval_s):
                return
            sent = time.monotonic()
            outcome: GateLease | Exception
            try:
                outcome = self.renew(lease.call_id, account=account, connect_retry=False)
            except Exception as exc:
                outcome = exc
            if lease.after_renew(outcome, sent, pacing, interval_s, log):
                return

    def _release_logged(self, call_id: str, account: str | None = None, *,
                        connect_retry: bool = True) -> None:
        try:
            self.release(call_id, account, connect_retry=connect_retry)
        except Exception as exc:
            log.warning("call %s: release failed (%s); its slots return when the lease "
                        "expires", call_id, exc)

    # transport -------------------------------------------------------------------------
    def _send(self, method: str, url: str, *, connect_retry: bool = True,
              **kwargs: Any) -> httpx.Response:
        try:
            for attempt in connect_retries(self.connect_retry_s if connect_retry else 0):
                with attempt:
                    response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable_error(method, url, exc) from exc
        return checked(method, url, response)
