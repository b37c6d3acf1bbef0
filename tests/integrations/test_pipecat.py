"""The pipecat adapter runs a real pipecat pipeline only while the gate counts its call."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from pipecat.frames.frames import EndFrame, Frame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from tests.integrations.conftest import FULL, N, Served

from callgate.client import CallNotAdmitted, GateClient
from callgate.integrations.pipecat import run_adopted_pipeline, run_pipeline, stream_call_id
from callgate.model import Call, Reason

pytestmark = pytest.mark.anyio


class Agent(FrameProcessor):
    """Stands for the STT -> LLM -> TTS chain: passes every frame on."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


class Bot:
    """Builds a one-processor pipeline worker from the keys; ends it as told once started."""

    def __init__(self, served: Served, end: str = "end") -> None:
        self.served = served
        self.end = end
        self.keys: Mapping[str, str] | None = None
        self.in_use_while_running: int | None = None
        self.worker: PipelineWorker | None = None
        self.started = asyncio.Event()

    def __call__(self, keys: Mapping[str, str]) -> PipelineWorker:
        self.keys = dict(keys)
        worker = PipelineWorker(Pipeline([Agent()]), cancel_on_idle_timeout=False,
                                enable_rtvi=False)

        @worker.event_handler("on_pipeline_started")
        async def started(worker: PipelineWorker, frame: object) -> None:
            self.in_use_while_running = self.served.in_use()
            self.started.set()
            if self.end == "end":
                await worker.queue_frame(EndFrame())
            elif self.end == "cancel":
                await worker.cancel(reason="caller hung up")
            elif self.end == "release":  # the status callback ends the call at the gate
                self.served.gate.release(self.call_id)

        self.worker = worker
        return worker

    call_id = "c1"


async def bounded(coroutine: object) -> object:
    async with asyncio.timeout(20):
        return await coroutine  # type: ignore[misc]


async def test_an_admitted_pipeline_gets_its_keys_runs_and_releases_on_end_frame(
        served_gate: Served) -> None:
    """The worker is built from the chosen keys, runs holding the slot, and frees it on EndFrame."""
    bot = Bot(served_gate)
    async with GateClient(served_gate.url) as gate:
        lease = await bounded(run_pipeline(gate, "c1", N, services=bot))
    assert bot.keys == {"llm": "key-a"} and bot.in_use_while_running == 1
    assert served_gate.in_use() == 0 and not lease.lost.is_set()  # type: ignore[attr-defined]


async def test_a_cancelled_pipeline_releases(served_gate: Served) -> None:
    """A pipeline cancelled (CancelFrame: the caller hung up) frees its slot."""
    bot = Bot(served_gate, end="cancel")
    async with GateClient(served_gate.url) as gate:
        await bounded(run_pipeline(gate, "c1", N, services=bot))
    assert bot.in_use_while_running == 1 and served_gate.in_use() == 0


async def test_services_that_fail_release_and_raise(served_gate: Served) -> None:
    """An error while building the services propagates and the slot is still freed."""
    def broken(keys: Mapping[str, str]) -> PipelineWorker:
        assert served_gate.in_use() == 1
        raise RuntimeError("no credentials for key-a")

    async with GateClient(served_gate.url) as gate:
        with pytest.raises(RuntimeError, match="no credentials"):
            await bounded(run_pipeline(gate, "c1", N, services=broken))
    assert served_gate.in_use() == 0


async def test_cancelling_the_run_cancels_the_pipeline_and_releases(served_gate: Served) -> None:
    """Cancelling the task running the pipeline takes the pipeline down and frees the slot."""
    bot = Bot(served_gate, end="none")
    async with GateClient(served_gate.url) as gate:
        run = asyncio.create_task(run_pipeline(gate, "c1", N, services=bot))
        async with asyncio.timeout(20):
            await bot.started.wait()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert served_gate.in_use() == 0 and bot.worker is not None and bot.worker.has_finished()


async def test_a_lost_lease_cancels_the_pipeline(served_gate: Served) -> None:
    """When the gate stops counting the call, the pipeline is cancelled: the slots are gone."""
    bot = Bot(served_gate, end="release")
    async with GateClient(served_gate.url) as gate:
        lease = await bounded(run_pipeline(gate, "c1", N, services=bot, renew_interval_s=0.05))
    assert lease.lost_status == "ended"  # type: ignore[attr-defined]
    assert bot.worker is not None and bot.worker.has_finished()


async def test_a_refused_call_never_builds_the_pipeline(served_gate: Served) -> None:
    """A call the gate refuses raises CallNotAdmitted and no service is ever built."""
    served_gate.gate.acquire(Call("holder", "inbound", FULL))
    bot = Bot(served_gate)
    async with GateClient(served_gate.url) as gate:
        with pytest.raises(CallNotAdmitted) as refused:
            await bounded(run_pipeline(gate, "c2", FULL, services=bot, wait=False))
    assert refused.value.reason is Reason.CAPACITY and bot.keys is None


async def test_a_twilio_stream_adopts_the_webhook_lease(served_gate: Served) -> None:
    """run_adopted_pipeline takes over the webhook's 2 h lease at lease_ttl and frees it."""
    served_gate.gate.acquire(Call("CA9", "inbound", N), ttl_s=7200)
    bot = Bot(served_gate)
    call_id = stream_call_id({"call_id": "CA9", "account": "acme"})
    async with GateClient(served_gate.url) as gate:
        lease = await bounded(run_adopted_pipeline(gate, call_id, services=bot))
    assert lease.ttl_s == 30 and served_gate.in_use() == 0  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="no call_id"):
        stream_call_id({"other": "x"})
