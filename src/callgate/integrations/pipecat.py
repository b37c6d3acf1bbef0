"""Run a pipecat pipeline only while the gate counts its call, and free the call however it ends.

The pipeline is built *after* admission, from the key aliases the gate chose, so a call
never opens an LLM or speech session the provider would refuse (the silence the gate
exists to prevent)::

    from callgate.client import CallNotAdmitted, GateClient
    from callgate.integrations.pipecat import run_adopted_pipeline, stream_call_id

    async def bot(websocket) -> None:           # a Twilio media stream, after pipecat's
        transport_type, call_data = await parse_telephony_websocket(websocket)  # handshake
        async with GateClient(GATE_URL, token=TOKEN) as gate:
            try:
                await run_adopted_pipeline(gate, stream_call_id(call_data["body"]),
                                           services=lambda keys: build_worker(websocket, keys))
            except CallNotAdmitted as refused:  # the webhook's lease is gone, or no gate
                logger.warning("not running the bot: %s", refused)

``services(keys)`` gets ``{"openai-realtime": "key-b", ...}`` (aliases, never secrets) and
returns the :class:`~pipecat.pipeline.worker.PipelineWorker` to run, mapping each alias to
its credentials. The lease is renewed while the pipeline runs and released when it ends:
an ``EndFrame``, a ``CancelFrame``, an error, a cancellation or anything else. If the gate
stops counting the call (``lease.lost``), the pipeline is cancelled: the slots are no
longer ours.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from callgate.client import ActiveLease, GateClient
from callgate.model import Direction

try:
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.workers.runner import WorkerRunner
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("callgate.integrations.pipecat needs pipecat-ai: "
                      "pip install 'callgate[pipecat]'") from exc

__all__ = ["Services", "run_adopted_pipeline", "run_pipeline", "stream_call_id"]

log = logging.getLogger("callgate.integrations.pipecat")

Services = Callable[[Mapping[str, str]], "PipelineWorker | Awaitable[PipelineWorker]"]
"""Builds the pipeline worker from the provider key aliases the gate chose."""


async def run_pipeline(
    gate: GateClient,
    call_id: str,
    number: str,
    *,
    services: Services,
    direction: Direction = "inbound",
    remote: str | None = None,
    **call_options: Any,
) -> ActiveLease:
    """Acquire (waiting in the queue if need be), run the pipeline, release; the lease used.

    ``call_options`` go to :meth:`GateClient.call` (``max_wait_s``, ``priority``,
    ``retry``...). Raises :class:`callgate.client.CallNotAdmitted` when the call may not
    start (the pipeline is then never built).
    """
    async with gate.call(call_id, direction, number, remote=remote, **call_options) as lease:
        await _run(lease, services)
    return lease


async def run_adopted_pipeline(
    gate: GateClient,
    call_id: str,
    *,
    services: Services,
    account: str | None = None,
    ttl_s: float | None = None,
) -> ActiveLease:
    """Run the pipeline of a call a voice webhook admitted (:meth:`GateClient.adopt`)."""
    async with gate.adopt(call_id, account=account, ttl_s=ttl_s) as lease:
        await _run(lease, services)
    return lease


def stream_call_id(custom_parameters: Mapping[str, Any]) -> str:
    """The gate's call id from a Twilio media stream's custom parameters (``call_id``)."""
    call_id = custom_parameters.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise ValueError(f"the stream's custom parameters have no call_id (got "
                         f"{sorted(custom_parameters)}): is the number's voice webhook "
                         "callgate's /twilio/voice?")
    return call_id


async def _run(lease: ActiveLease, services: Services) -> None:
    built = services(lease.keys)
    worker: PipelineWorker = await built if inspect.isawaitable(built) else built
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run(), name=f"callgate-pipeline-{lease.call_id}")
    lost = asyncio.create_task(lease.lost.wait(), name=f"callgate-lost-{lease.call_id}")
    try:
        await asyncio.wait({running, lost}, return_when=asyncio.FIRST_COMPLETED)
        if lost.done() and not running.done():
            log.warning("call %s: the gate no longer counts this call (%s): cancelling its "
                        "pipeline", lease.call_id, lease.lost_status)
            await worker.cancel(reason=f"callgate: lease {lease.lost_status}")
        await running
    finally:
        lost.cancel()
        if not running.done():  # we are being cancelled: take the pipeline down with us
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
