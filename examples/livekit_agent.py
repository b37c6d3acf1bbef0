"""A LiveKit Agents worker whose jobs run only when callgate admits their call.

    pip install 'callgate[livekit]' livekit-plugins-openai
    export LIVEKIT_URL=... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=... CALLGATE_URL=http://127.0.0.1:8080
    python examples/livekit_agent.py dev

Set the SIP dispatch rule's agent metadata to {"number": "+14155550100"} (the number the rule
serves) so the gate decides when the job is offered; without it the job is gated in the
entrypoint once the SIP participant has joined.
"""

from __future__ import annotations

import os

from livekit.agents import Agent, AgentSession, JobContext, WorkerOptions, cli

from callgate.client import ActiveLease
from callgate.integrations.livekit import GatedJobs

# Key aliases the gate hands out -> the real credentials, kept by the worker, never the gate.
OPENAI_KEYS = {"key-a": os.environ.get("OPENAI_KEY_A", ""),
               "key-b": os.environ.get("OPENAI_KEY_B", "")}

gated = GatedJobs(os.environ.get("CALLGATE_URL", "http://127.0.0.1:8080"),
                  token=os.environ.get("CALLGATE_TOKEN"))


@gated.entrypoint
async def entrypoint(ctx: JobContext, lease: ActiveLease) -> None:
    from livekit.plugins import openai  # the provider plugin of your choice

    await ctx.connect()
    session = AgentSession(llm=openai.realtime.RealtimeModel(
        api_key=OPENAI_KEYS[lease.keys["openai-realtime"]]))
    await session.start(agent=Agent(instructions="You are a helpful receptionist."),
                        room=ctx.room)


if __name__ == "__main__":
    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint, request_fnc=gated.request_fnc,
                              load_fnc=gated.load_fnc(numbers=["+14155550100"]),
                              load_threshold=0.9))
