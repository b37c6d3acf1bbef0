"""Gate LiveKit Agents jobs: accept a job only when the gate admits its call, hold the lease
for the job's life, release it exactly once whatever ends the job.

::

    from livekit.agents import AgentServer, JobContext  # or WorkerOptions(...)
    from callgate.integrations.livekit import GatedJobs

    gated = GatedJobs("http://gate.internal:8080", token=os.environ["CALLGATE_TOKEN"])

    @gated.entrypoint
    async def entrypoint(ctx: JobContext, lease: ActiveLease) -> None:
        await ctx.connect()
        session = AgentSession(llm=realtime_model(lease.keys["openai-realtime"]), ...)
        await session.start(agent=Assistant(), room=ctx.room)

    WorkerOptions(entrypoint_fnc=entrypoint, request_fnc=gated.request_fnc,
                  load_fnc=gated.load_fnc(numbers=["+14155550100"]))

Where the call's numbers come from (replace either function to read your own):

- :func:`call_from_job`, when a job is offered: the job's ``metadata`` (set by the SIP
  dispatch rule's ``room_config.agents[].metadata``, or an explicit dispatch) as JSON
  ``{"number": "+14155550100", "caller": "+12125550199"}``; the caller may instead come
  from the room name that LiveKit SIP's individual dispatch rule makes,
  ``<prefix>_<caller>_<suffix>``. Without a number the job is accepted and gated in the
  entrypoint instead.
- :func:`call_from_participant`, in the entrypoint, once the SIP participant has joined
  (``wait_for_participant()``): its attributes ``sip.trunkPhoneNumber`` (our number) and
  ``sip.phoneNumber`` (the caller). A refused call ends the job: ``on_refused`` runs
  (by default it deletes the room, which hangs the SIP caller up) and the job shuts down.

The call id is ``lk-<job id>`` in both places, so the job process adopts the lease its
worker process took when it accepted the job. A job process that dies stops the
heartbeat: its slots come back within one ``lease_ttl``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx

from callgate.client import ActiveLease, CallNotAdmitted, GateClient, GateUnavailableError
from callgate.client_wire import GateDecision, GateHTTPError, GateProtocolError
from callgate.model import Direction, Outcome

try:
    from livekit import rtc
    from livekit.agents import JobContext, JobRequest
    from livekit.protocol import agent as lk_agent
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("callgate.integrations.livekit needs livekit-agents: "
                      "pip install 'callgate[livekit]'") from exc

__all__ = ["CallInfo", "GateLoad", "GatedJobs", "call_from_job", "call_from_participant",
           "call_id_for"]

log = logging.getLogger("callgate.integrations.livekit")


@dataclass(frozen=True)
class CallInfo:
    """What the gate needs to know about a job's call."""

    number: str  # our number: dialled (inbound) or the caller id (outbound)
    remote: str | None = None
    direction: Direction = "inbound"


def call_id_for(job: lk_agent.Job) -> str:
    """The gate's call id for a LiveKit job: the same in the worker and the job process."""
    return f"lk-{job.id}"


def call_from_job(job: lk_agent.Job) -> CallInfo | None:
    """The call of an offered job, from its metadata or room name; None if not known yet."""
    try:
        meta = json.loads(job.metadata) if job.metadata else {}
    except ValueError:
        meta = {}
    if not isinstance(meta, dict) or not isinstance(meta.get("number"), str):
        return None
    caller = meta.get("caller")
    if not isinstance(caller, str):
        parts = job.room.name.split("_")
        caller = parts[1] if len(parts) >= 3 and parts[1].startswith("+") else None
    direction: Direction = "outbound" if meta.get("direction") == "outbound" else "inbound"
    return CallInfo(meta["number"], caller, direction)


async def call_from_participant(ctx: JobContext) -> CallInfo:
    """The call of a job whose SIP participant has joined (``sip.*`` attributes)."""
    participant: rtc.RemoteParticipant = await ctx.wait_for_participant()
    attributes = participant.attributes
    number = attributes.get("sip.trunkPhoneNumber")
    if not number:
        raise ValueError(f"participant {participant.identity!r} has no sip.trunkPhoneNumber "
                         "attribute: pass participant_call= to read the number elsewhere")
    return CallInfo(number, attributes.get("sip.phoneNumber") or None)


async def hang_up(ctx: JobContext, refused: CallNotAdmitted) -> None:
    """The default ``on_refused``: delete the room, which hangs up the SIP caller."""
    try:
        await ctx.delete_room()
    except Exception as exc:  # no API credentials, or the room is already gone
        log.warning("call %s refused (%s) but the room could not be deleted: %s",
                    refused.decision.call_id, refused.reason, exc)


Entrypoint = Callable[[JobContext, ActiveLease], Awaitable[None]]
OnRefused = Callable[[JobContext, CallNotAdmitted], Awaitable[None]]


class GatedJobs:
    """``request_fnc``, ``entrypoint`` and ``load_fnc`` for a LiveKit worker, on one gate.

    ``client_options`` go to every :class:`GateClient` this makes (``timeout_s``,
    ``connect_retry_s``, ``unreachable_message``...); ``max_wait_s`` bounds how long a call
    gated in the entrypoint may wait in the gate's queue.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        call_from: Callable[[lk_agent.Job], CallInfo | None] = call_from_job,
        participant_call: Callable[[JobContext], Awaitable[CallInfo]] = call_from_participant,
        on_refused: OnRefused = hang_up,
        max_wait_s: float | None = 60.0,
        renew_interval_s: float | None = None,
        **client_options: Any,
    ) -> None:
        self.url, self.token = url, token
        self.call_from, self.participant_call = call_from, participant_call
        self.on_refused = on_refused
        self.max_wait_s, self.renew_interval_s = max_wait_s, renew_interval_s
        self.client_options = client_options

    def client(self) -> GateClient:
        return GateClient(self.url, self.token, **self.client_options)

    # the worker process ----------------------------------------------------------------
    async def request_fnc(self, request: JobRequest) -> None:
        """Accept the offered job only if the gate admits its call (when it is known now)."""
        info = self.call_from(request.job)
        call_id = call_id_for(request.job)
        if info is None:
            log.info("job %s: call not known yet; gating in the entrypoint", request.id)
            await request.accept()
            return
        async with self.client() as gate:
            try:
                decision = await gate.acquire(call_id, info.direction, info.number,
                                              remote=info.remote)
            except (GateUnavailableError, GateHTTPError, GateProtocolError) as exc:
                log.error("job %s (call %s to %s) rejected: no decision from the gate: %s",
                          request.id, call_id, info.number, exc)
                await request.reject()
                return
            if not decision.admitted and decision.outcome is Outcome.QUEUED:
                # An offer must be answered now: no waiting in line here.
                await gate.release(call_id)
        if decision.admitted:
            log.info("job %s: call %s admitted (%s)", request.id, call_id, _said(decision))
            await request.accept()
        else:
            log.warning("job %s: call %s refused: %s", request.id, call_id, _said(decision))
            await request.reject()

    # the job process ---------------------------------------------------------------------
    def entrypoint(self, entrypoint: Entrypoint) -> Callable[[JobContext], Awaitable[None]]:
        """Wrap ``entrypoint(ctx, lease)``: it runs only with a lease, held for the job's life.

        The lease is released by a shutdown callback, exactly once, whatever ends the job
        (the room closing, ``ctx.shutdown()``, the entrypoint raising); if the gate stops
        counting the call, the job is shut down.
        """
        async def gated(ctx: JobContext) -> None:
            held = AsyncExitStack()
            ctx.add_shutdown_callback(lambda reason: _close(held, ctx.job.id, reason))
            gate = await held.enter_async_context(self.client())
            call_id = call_id_for(ctx.job)
            try:
                if self.call_from(ctx.job) is not None:  # the worker took the lease: adopt it
                    lease = await held.enter_async_context(
                        gate.adopt(call_id, renew_interval_s=self.renew_interval_s))
                else:
                    info = await self.participant_call(ctx)
                    lease = await held.enter_async_context(gate.call(
                        call_id, info.direction, info.number, remote=info.remote,
                        max_wait_s=self.max_wait_s, renew_interval_s=self.renew_interval_s))
            except CallNotAdmitted as refused:
                log.warning("job %s: call %s refused: %s", ctx.job.id, call_id,
                            _said(refused.decision))
                await self.on_refused(ctx, refused)
                ctx.shutdown(reason=f"callgate: {refused.reason}")
                return
            watch = asyncio.create_task(_shut_down_when_lost(ctx, lease))
            held.callback(watch.cancel)
            await entrypoint(ctx, lease)

        gated.__name__ = getattr(entrypoint, "__name__", "entrypoint")
        gated.__doc__ = entrypoint.__doc__
        return gated

    def load_fnc(self, numbers: Iterable[str] | None = None,
                 refresh_s: float = 1.0) -> GateLoad:
        """A ``load_fnc`` reading the gate's usage (see :class:`GateLoad`)."""
        return GateLoad(self.url, numbers, token=self.token, refresh_s=refresh_s)


async def _close(held: AsyncExitStack, job_id: str, reason: str) -> None:
    log.info("job %s shutting down (%s): releasing its call", job_id, reason)
    await held.aclose()  # a second close finds nothing left to do


async def _shut_down_when_lost(ctx: JobContext, lease: ActiveLease) -> None:
    await lease.lost.wait()
    log.warning("job %s: the gate no longer counts call %s (%s): shutting the job down",
                ctx.job.id, lease.call_id, lease.lost_status)
    ctx.shutdown(reason=f"callgate: lease {lease.lost_status}")


def _said(decision: GateDecision) -> str:
    where = f" at {decision.layer} {decision.scope}" if decision.layer else ""
    return f"{decision.outcome} ({decision.reason}){where}"


class GateLoad:
    """A LiveKit ``load_fnc``: the worker's load is the fullest layer its calls pass through.

    The load is max(in_use / cap) over the number layers of ``numbers`` (every number
    when None) and every trunk, account, provider pool and resource layer the token may see
    (an account token sees only its own numbers and plan), read from ``GET /v1/usage`` at
    most once per ``refresh_s``. LiveKit calls ``load_fnc`` on its event loop and expects
    an answer at once, so the read happens on a background thread and the last value is
    returned meanwhile (0.0 until the first read). Past the worker's ``load_threshold``
    LiveKit stops offering it jobs, before the gate would refuse them.
    """

    def __init__(self, url: str, numbers: Iterable[str] | None = None, *,
                 token: str | None = None, refresh_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._numbers = None if numbers is None else frozenset(numbers)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._url = url.rstrip("/") + "/v1/usage"
        self._refresh_s, self._clock = refresh_s, clock
        self._value = 0.0
        self._read_at: float | None = None
        self._reading = threading.Lock()

    def __call__(self, *_worker: Any) -> float:
        now = self._clock()
        stale = self._read_at is None or now - self._read_at >= self._refresh_s
        if stale and self._reading.acquire(blocking=False):
            self._read_at = now
            threading.Thread(target=self._refresh, name="callgate-load", daemon=True).start()
        return self._value

    def _refresh(self) -> None:
        try:
            document = httpx.get(self._url, headers=self._headers, timeout=2.0).json()
            self._value = self.load_of(document)
        except Exception as exc:  # keep the last value; LiveKit keeps asking
            log.warning("load_fnc: cannot read the gate's usage (%s); keeping %.2f",
                        exc, self._value)
        finally:
            self._reading.release()

    def load_of(self, usage: dict[str, Any]) -> float:
        """max(in_use / cap) over the layers this worker's calls use, in [0, 1]."""
        load = 0.0
        for row in usage.get("layers", ()):
            if row["layer"] == "number" and self._numbers is not None and (
                    row["scope"] not in self._numbers):
                continue
            if row["layer"] == "provider" and ":" in row["scope"]:
                continue  # one full key is not a full pool: the gate picks another key
            if row["cap"] > 0:
                load = max(load, min(1.0, row["in_use"] / row["cap"]))
        return load
