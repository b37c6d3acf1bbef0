"""``GET /v1/usage/stream``: the usage document and this process's counters, live (SSE).

The headroom page at ``/`` reads this stream: about once a second one server-sent event

    event: usage
    data: {"usage": {...GET /v1/usage...} | null, "queue": {"total": N, "entries": [...]},
           "store": {"up": true, "error": null}, "process": {...Activity.summary()...},
           "account": null | "acme", "interval_s": 1.0}

``usage`` is null (and ``store.up`` false) when the store cannot be read: the stream goes
on, so the page shows the outage and recovers with the store. An account token's stream
carries only its account, cut by the same rules as ``GET /v1/usage`` and ``GET /v1/queue``
(:mod:`callgate.service.auth`), and its counters count only its own calls. The token comes
as ``Authorization: Bearer`` or, for clients that cannot set a header (``EventSource``,
``curl`` in a hurry), as ``?token=``: the access log masks it.

A stream never ends by itself, so two things end it: the client going away (Starlette's
streaming response notices the disconnect and cancels it) and the server draining on
SIGTERM: ``callgate serve`` calls :meth:`EventStreams.close`, and every open stream ends
within one interval, so uvicorn's graceful shutdown never waits on a page left open.
(This is why the stream is Starlette's ``StreamingResponse`` and not ``sse-starlette``:
that library learns of a shutdown by patching uvicorn's signal handling, which has broken
across uvicorn releases, and writing ``event:``/``data:`` lines takes two lines here.)
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from callgate.errors import StoreError
from callgate.gate import Gate
from callgate.service.auth import principal_of, visible_queue, visible_usage
from callgate.service.metrics import Metrics

STREAM_PATH = "/v1/usage/stream"
MAX_QUEUE_ENTRIES = 1_000  # per event; the page says how many more wait (numbers' rows count all)
RETRY_MS = 2_000  # how soon an EventSource reconnects after the stream drops


class EventStreams:
    """The open streams' shared switch: :meth:`close` ends them all (at server shutdown)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        if not interval_s > 0:
            raise ValueError(f"stream interval must be > 0 seconds, not {interval_s!r}")
        self.interval_s = interval_s
        self.closing = False

    def close(self) -> None:
        """End every open stream at its next tick (safe to call from a signal handler)."""
        self.closing = True  # a plain flag: a signal handler may not take a lock


def stream_router(gate: Gate, metrics: Metrics, streams: EventStreams) -> APIRouter:
    """The stream's route, for :func:`callgate.service.app.create_app`."""
    router = APIRouter()

    shared = SharedRead(gate, metrics, streams.interval_s)

    async def document(account: str | None) -> dict[str, Any]:
        usage, entries, store = await shared.read()
        if account is not None:
            if usage is not None:
                usage = visible_usage(usage, gate.stack, account)
            entries = visible_queue(entries, account)
        return {
            "usage": usage,
            "queue": {"total": len(entries), "entries": entries[:MAX_QUEUE_ENTRIES]},
            "store": store,
            "process": metrics.activity.summary(account),
            "account": account,
            "interval_s": streams.interval_s,
        }

    async def events(account: str | None) -> AsyncIterator[bytes]:
        yield f"retry: {RETRY_MS}\n\n".encode()
        while not streams.closing:
            yield _event("usage", await document(account))
            await asyncio.sleep(streams.interval_s)

    @router.get(
        STREAM_PATH, tags=["state"], response_class=StreamingResponse,
        openapi_extra={"security": [{"bearer": []}]},
        responses={200: {"content": {"text/event-stream": {}},
                         "description": "One `usage` event about once a second."},
                   401: {"description": "No bearer token, or one no tenant owns."}},
    )
    async def usage_stream(request: Request) -> StreamingResponse:
        """The usage document, queue and this process's decision counters, once a second.

        Server-sent events; the token may also come as ``?token=`` (for ``EventSource``).
        An account token's stream carries only its account.
        """
        account = principal_of(request).account
        return StreamingResponse(events(account), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    return router


Read = tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, Any]]


class SharedRead:
    """The store's usage and queue, read at most once per interval for every open stream.

    Reading the usage of 10,000 numbers takes tens to hundreds of milliseconds, and the
    memory store holds its lock meanwhile: ten open pages must not cost ten reads a
    second, and a slow read must not take the store's time from decisions. So streams
    that ask within one interval share a read, and a read that took ``d`` seconds is kept
    for at least ``READ_SHARE * d`` (the page spends at most about 1/READ_SHARE of the
    time reading; it says when its gauges were read). A read that failed is retried the
    next interval: the store's recovery shows at once.
    """

    READ_SHARE = 10.0

    def __init__(self, gate: Gate, metrics: Metrics, interval_s: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.gate = gate
        self.metrics = metrics
        self.interval_s = interval_s
        self._monotonic = monotonic  # wall time: how old a read is, not the gate's clock
        self._lock = asyncio.Lock()
        self._last: Read | None = None
        self._fresh_until = -math.inf

    async def read(self) -> Read:
        async with self._lock:
            start = self._monotonic()
            if self._last is not None and start < self._fresh_until:
                return self._last
            share = self.READ_SHARE
            try:
                usage, entries = await asyncio.to_thread(self._read)
                read: Read = (usage, entries, {"up": True, "error": None})
            except StoreError as exc:
                self.metrics.store_error("stream")
                read = (None, [], {"up": False, "error": f"{exc}"})
                share = 0.0  # a failed read spent its time waiting, not working: retry soon
            took = self._monotonic() - start
            # 0.9: a stream that sleeps one interval between events finds the read stale
            self._fresh_until = start + max(0.9 * self.interval_s, share * took)
            self._last = read
            return read

    def _read(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The usage document and the queue (in a worker thread: the store may do I/O)."""
        return self.gate.usage(), self.gate.queue()


def _event(name: str, data: dict[str, Any]) -> bytes:
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False, default=str)
    return f"event: {name}\ndata: {payload}\n\n".encode()
