"""A pipecat bot for Twilio media streams that runs only on a lease the gate's webhook took.

    pip install 'callgate[pipecat]' 'pipecat-ai[openai,websocket]' fastapi uvicorn
    CALLGATE_URL=http://127.0.0.1:8080 uvicorn examples.pipecat_bot:app --port 8765

Point the stack's [twilio] stream_url at wss://<this host>/media. callgate's /twilio/voice
admits the call and connects the stream with the call id as a custom parameter; the bot
adopts that lease (a heartbeat at lease_ttl), builds its services from the chosen key
aliases, and releases the call however the pipeline ends.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from fastapi import FastAPI, WebSocket
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.runner.utils import parse_telephony_websocket

from callgate.client import CallNotAdmitted, GateClient
from callgate.integrations.pipecat import run_adopted_pipeline, stream_call_id

app = FastAPI()
OPENAI_KEYS = {"key-a": os.environ.get("OPENAI_KEY_A", ""),
               "key-b": os.environ.get("OPENAI_KEY_B", "")}


def build_worker(websocket: WebSocket, call_data: dict, keys: Mapping[str, str]) -> PipelineWorker:
    from pipecat.serializers.twilio import TwilioFrameSerializer
    from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
    from pipecat.transports.websocket.fastapi import (
        FastAPIWebsocketParams,
        FastAPIWebsocketTransport,
    )

    transport = FastAPIWebsocketTransport(websocket, FastAPIWebsocketParams(
        audio_in_enabled=True, audio_out_enabled=True,
        serializer=TwilioFrameSerializer(call_data["stream_id"], call_data["call_id"])))
    llm = OpenAIRealtimeLLMService(api_key=OPENAI_KEYS[keys["openai-realtime"]])
    return PipelineWorker(Pipeline([transport.input(), llm, transport.output()]))


@app.websocket("/media")
async def media(websocket: WebSocket) -> None:
    await websocket.accept()
    _, call_data = await parse_telephony_websocket(websocket)
    async with GateClient(os.environ.get("CALLGATE_URL", "http://127.0.0.1:8080"),
                          token=os.environ.get("CALLGATE_TOKEN")) as gate:
        try:
            await run_adopted_pipeline(
                gate, stream_call_id(call_data["body"]),
                services=lambda keys: build_worker(websocket, call_data, keys))
        except CallNotAdmitted as refused:  # the call already ended, or no gate
            await websocket.close(reason=str(refused.reason))
