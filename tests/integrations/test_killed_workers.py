"""A LiveKit job or a pipecat bot killed with SIGKILL frees its call's slots within one TTL.

The gate is a real `callgate serve --time-scale 10`; each worker is a real process running
the adapter, killed while its call is up. Nothing releases the lease: the heartbeat stops
and the gate expires it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.integrations.conftest import STACK, N
from tests.served import Served, served

pytestmark = pytest.mark.slow

SCALE = 10.0

LIVEKIT_JOB = f"""
import asyncio, json, sys
from livekit import rtc
from livekit.agents.job import (JobAcceptArguments, JobContext, JobExecutorType, JobProcess,
                                JobRequest, RunningJobInfo)
from livekit.protocol import agent, models
from callgate.integrations.livekit import GatedJobs

async def main():
    job = agent.Job(id="AJ_KILL", metadata=json.dumps({{"number": "{N}"}}),
                    room=models.Room(name="call-_+12125550199_k"))
    gated = GatedJobs(sys.argv[1], renew_interval_s=0.3)
    async def accept(arguments): pass
    async def reject(terminate): raise SystemExit("rejected")
    await gated.request_fnc(JobRequest(job=job, on_accept=accept, on_reject=reject))
    info = RunningJobInfo(accept_arguments=JobAcceptArguments("", "agent", ""), job=job,
                          url="ws://127.0.0.1:9", token="", worker_id="W", fake_job=True)
    ctx = JobContext(proc=JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None,
                                     http_proxy=None), info=info, room=rtc.Room(),
                     on_connect=lambda: None, on_shutdown=lambda reason: None,
                     inference_executor=None)
    async def entrypoint(ctx, lease):
        print("running", lease.ttl_s, flush=True)
    await gated.entrypoint(entrypoint)(ctx)
    await asyncio.sleep(120)  # the call goes on until the process is killed

asyncio.run(main())
"""

PIPECAT_BOT = f"""
import asyncio, sys
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from callgate.client import GateClient
from callgate.integrations.pipecat import run_pipeline

class Agent(FrameProcessor):
    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)

def services(keys):
    worker = PipelineWorker(Pipeline([Agent()]), cancel_on_idle_timeout=False, enable_rtvi=False)
    @worker.event_handler("on_pipeline_started")
    async def started(worker, frame):
        print("running", flush=True)
    return worker

async def main():
    async with GateClient(sys.argv[1]) as gate:
        await run_pipeline(gate, "bot-kill", "{N}", services=services, renew_interval_s=0.3)

asyncio.run(main())
"""


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Served]:
    config = tmp_path / "stack.toml"
    config.write_text(STACK.replace('store = "memory://"\n', ""))
    with served(config, tmp_path / "gate.db", tmp_path / "serve.log",
                time_scale=SCALE) as server:
        yield server


def usage(url: str) -> tuple[float, int]:
    document = httpx.get(f"{url}/v1/usage", timeout=5).json()
    in_use = next(int(r["in_use"]) for r in document["layers"]
                  if r["layer"] == "number" and r["scope"] == N)
    return float(document["now"]), in_use


@pytest.mark.parametrize("worker", [LIVEKIT_JOB, PIPECAT_BOT], ids=["livekit", "pipecat"])
def test_a_killed_worker_frees_its_slots_within_one_ttl(gate: Served, worker: str) -> None:
    """SIGKILL a worker holding a call: the gate frees the slot within lease_ttl (+2 s slack)."""
    with subprocess.Popen([sys.executable, "-c", worker, gate.url], stdout=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("running"), "the worker did not start"
            start, held = usage(gate.url)
            deadline = time.monotonic() + 30
            while usage(gate.url)[0] < start + 60 and time.monotonic() < deadline:
                time.sleep(0.05)  # two TTLs of the gate's clock: the heartbeat holds it
            assert held == 1 and usage(gate.url)[1] == 1
        finally:
            proc.kill()
            proc.wait(timeout=10)
    killed_at, _ = usage(gate.url)
    deadline = time.monotonic() + 30
    while usage(gate.url)[1] and time.monotonic() < deadline:
        time.sleep(0.05)  # bounded: the reaper frees it on the gate's clock
    freed_at, in_use = usage(gate.url)
    assert in_use == 0
    assert freed_at - killed_at <= 30 + 2 * SCALE
