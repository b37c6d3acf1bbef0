"""The LiveKit adapter, driven through LiveKit's own job types built from protocol messages.

No LiveKit server: a JobRequest is built from an ``agent.Job`` message, a JobContext around
an unconnected ``rtc.Room``, and :func:`run_like_livekit` runs an entrypoint the way
LiveKit's job process does (livekit/agents/ipc/job_proc_lazy_main.py): the entrypoint as a
task; on shutdown, wait for it, then run every shutdown callback, then clean up.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import pytest
from livekit import rtc
from livekit.agents.job import (
    JobAcceptArguments,
    JobContext,
    JobExecutorType,
    JobProcess,
    JobRequest,
    RunningJobInfo,
)
from livekit.protocol import agent as lk_agent
from livekit.protocol import models
from tests.integrations.conftest import FULL, N, Served

from callgate.client import ActiveLease, CallNotAdmitted
from callgate.integrations.livekit import (
    CallInfo,
    GatedJobs,
    GateLoad,
    call_from_job,
    call_id_for,
)
from callgate.model import Call

pytestmark = pytest.mark.anyio


def job(job_id: str = "AJ_1", *, number: str | None = N, room: str = "call-_+12125550199_x1"
        ) -> lk_agent.Job:
    metadata = json.dumps({"number": number}) if number else ""
    return lk_agent.Job(id=job_id, type=lk_agent.JobType.JT_ROOM, metadata=metadata,
                        room=models.Room(sid="RM_1", name=room))


async def offer(gated: GatedJobs, offered: lk_agent.Job) -> str:
    """Offer ``offered`` to the request_fnc; 'accepted' or 'rejected'."""
    answers: list[str] = []

    async def on_accept(arguments: JobAcceptArguments) -> None:
        answers.append("accepted")

    async def on_reject(terminate: bool) -> None:
        answers.append("rejected")

    await gated.request_fnc(JobRequest(job=offered, on_accept=on_accept, on_reject=on_reject))
    assert len(answers) == 1
    return answers[0]


def context(offered: lk_agent.Job, shutdown: asyncio.Future[str]) -> JobContext:
    info = RunningJobInfo(accept_arguments=JobAcceptArguments(name="", identity="agent",
                                                              metadata=""),
                          job=offered, url="ws://127.0.0.1:9", token="", worker_id="W1",
                          fake_job=True)
    proc = JobProcess(executor_type=JobExecutorType.THREAD, user_arguments=None,
                      http_proxy=None)

    def on_shutdown(reason: str) -> None:
        if not shutdown.done():
            shutdown.set_result(reason)

    return JobContext(proc=proc, info=info, room=rtc.Room(), on_connect=lambda: None,
                      on_shutdown=on_shutdown, inference_executor=None)  # type: ignore[arg-type]


async def run_like_livekit(offered: lk_agent.Job,
                           entrypoint: Callable[[JobContext], Awaitable[None]],
                           end: Callable[[JobContext], Awaitable[None]] | None = None) -> str:
    """Run ``entrypoint`` as LiveKit's job process does; ``end`` ends the job from outside."""
    shutdown: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    ctx = context(offered, shutdown)
    entry = asyncio.create_task(entrypoint(ctx))

    def crashed(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() and not shutdown.done():
            shutdown.set_result("job crashed")

    entry.add_done_callback(crashed)
    async with asyncio.timeout(20):
        if end is not None:
            await end(ctx)
        reason = await shutdown
        await asyncio.gather(entry, return_exceptions=True)
        for callback in ctx._shutdown_callbacks:  # LiveKit runs them all, concurrently
            await callback(reason)
        await ctx._on_cleanup()
    return reason


class Agent:
    """A user entrypoint: records the lease it was given and how many slots were held."""

    def __init__(self, served: Served, *, fail: bool = False) -> None:
        self.served, self.fail = served, fail
        self.lease: ActiveLease | None = None
        self.in_use: int | None = None
        self.running = asyncio.Event()

    async def __call__(self, ctx: JobContext, lease: ActiveLease) -> None:
        self.lease, self.in_use = lease, self.served.in_use()
        self.running.set()
        if self.fail:
            raise RuntimeError("the agent crashed")


async def room_closes(ctx: JobContext) -> None:
    """The caller hangs up some time after the entrypoint returned: LiveKit shuts down."""
    await asyncio.sleep(0.1)
    ctx.shutdown(reason="room disconnected")


def test_call_from_job_reads_metadata_and_the_sip_room_name() -> None:
    """The number comes from the job's metadata; the caller from it or the room's name."""
    assert call_from_job(job()) == CallInfo(N, "+12125550199")
    assert call_from_job(job(number=None)) is None
    explicit = lk_agent.Job(id="AJ_2", metadata=json.dumps(
        {"number": N, "caller": "+3312345678", "direction": "outbound"}),
        room=models.Room(name="outbound-42"))
    assert call_from_job(explicit) == CallInfo(N, "+3312345678", "outbound")


async def test_an_admitted_job_is_accepted_runs_and_releases_once_when_the_room_closes(
        served_gate: Served) -> None:
    """Accepted on admission; the job process adopts the lease; the shutdown frees it once."""
    gated = GatedJobs(served_gate.url)
    offered = job()
    assert await offer(gated, offered) == "accepted"
    assert served_gate.in_use() == 1
    agent = Agent(served_gate)
    reason = await run_like_livekit(offered, gated.entrypoint(agent), end=room_closes)
    assert reason == "room disconnected"
    assert agent.lease is not None and agent.lease.call_id == call_id_for(offered)
    assert agent.lease.keys == {"llm": "key-a"} and agent.in_use == 1
    assert served_gate.in_use() == 0
    ended = served_gate.gate.release(call_id_for(offered))
    assert not ended.released  # released exactly once, by the shutdown callback


async def test_a_job_whose_entrypoint_raises_still_releases(served_gate: Served) -> None:
    """An entrypoint that raises crashes the job; the shutdown callback frees the slot."""
    gated = GatedJobs(served_gate.url)
    offered = job()
    assert await offer(gated, offered) == "accepted"
    reason = await run_like_livekit(offered, gated.entrypoint(Agent(served_gate, fail=True)))
    assert reason == "job crashed" and served_gate.in_use() == 0


async def test_a_refused_job_is_rejected_and_the_decision_logged(
        served_gate: Served, caplog: pytest.LogCaptureFixture) -> None:
    """A full number: the offer is rejected, the reason logged, no slot and no queue entry."""
    served_gate.gate.acquire(Call("holder", "inbound", FULL))
    gated = GatedJobs(served_gate.url)
    assert await offer(gated, job("AJ_9", number=FULL)) == "rejected"
    assert "refused: queued (capacity) at number +14155550101" in caplog.text
    assert served_gate.gate.queue() == [] and served_gate.in_use(FULL) == 1


async def test_a_job_gated_in_the_entrypoint_is_ended_when_refused(served_gate: Served) -> None:
    """Without a number at offer time the entrypoint gates; refused, the job shuts down."""
    served_gate.gate.acquire(Call("holder", "inbound", FULL))
    refusals: list[str] = []

    async def participant_call(ctx: JobContext) -> CallInfo:
        return CallInfo(FULL, "+12125550199")  # what sip.* attributes would say

    async def on_refused(ctx: JobContext, refused: CallNotAdmitted) -> None:
        refusals.append(str(refused.reason))

    gated = GatedJobs(served_gate.url, participant_call=participant_call,
                      on_refused=on_refused, max_wait_s=0)
    offered = job("AJ_3", number=None)
    assert await offer(gated, offered) == "accepted"  # gated later, in the entrypoint
    agent = Agent(served_gate)
    reason = await run_like_livekit(offered, gated.entrypoint(agent))
    assert reason == "callgate: capacity" and refusals == ["capacity"]
    assert agent.lease is None and served_gate.gate.queue() == []


async def test_a_job_gated_in_the_entrypoint_runs_when_admitted(served_gate: Served) -> None:
    """Admitted in the entrypoint (after the participant joined): runs, then frees its slot."""
    async def participant_call(ctx: JobContext) -> CallInfo:
        return CallInfo(N, "+12125550199")

    gated = GatedJobs(served_gate.url, participant_call=participant_call)
    offered = job("AJ_4", number=None)
    agent = Agent(served_gate)
    await run_like_livekit(offered, gated.entrypoint(agent), end=room_closes)
    assert agent.in_use == 1 and served_gate.in_use() == 0


async def test_a_lost_lease_shuts_the_job_down(served_gate: Served) -> None:
    """When the gate stops counting the call, the adapter shuts the job down."""
    gated = GatedJobs(served_gate.url, renew_interval_s=0.05)
    offered = job("AJ_5")
    assert await offer(gated, offered) == "accepted"

    agent = Agent(served_gate)

    async def gate_ends_it(ctx: JobContext) -> None:
        await agent.running.wait()
        served_gate.gate.release(call_id_for(offered))  # e.g. an admin frees it

    reason = await run_like_livekit(offered, gated.entrypoint(agent), end=gate_ends_it)
    assert reason == "callgate: lease ended"


async def test_an_unreachable_gate_rejects_the_offer() -> None:
    """No gate at all: the job is rejected (never an agent without a decision)."""
    from tests.served import free_port

    gated = GatedJobs(f"http://127.0.0.1:{free_port()}", connect_retry_s=0)
    assert await offer(gated, job()) == "rejected"


def test_load_fnc_follows_the_gates_usage(served_gate: Served) -> None:
    """load_fnc answers at once with the last reading and follows usage within refresh_s."""
    load = GateLoad(served_gate.url, [N], refresh_s=0.0)

    def settled(expected: float) -> float:
        deadline = time.monotonic() + 10
        value = load()
        while value != expected and time.monotonic() < deadline:
            time.sleep(0.02)  # the reading happens on a background thread
            value = load()
        return value

    assert settled(0.0) == 0.0
    served_gate.gate.acquire(Call("a", "inbound", N))
    assert settled(0.5) == 0.5  # one of the number's two lines
    served_gate.gate.acquire(Call("b", "inbound", N))
    assert settled(1.0) == 1.0
    served_gate.gate.release("a")
    assert settled(0.5) == 0.5
    full_elsewhere = served_gate.gate.acquire(Call("c", "inbound", FULL))
    assert full_elsewhere.lease is not None
    assert settled(0.5) == 0.5  # another number's full line is not this worker's
