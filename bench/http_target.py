"""The two ASGI apps the HTTP benchmark serves, each with ``uvicorn --factory``.

``callgate_app``: the real API (memory store, system clock) on the roomy variant of
the example stack. ``bare_app``: Starlette with the same two routes returning constants.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.stacks import roomy_stack
from callgate.clock import system_clock
from callgate.gate import Gate
from callgate.stores import MemoryStore

HTTP_CAP = 100_000
HTTP_CPS = 100_000

ADMITTED = {
    "call_id": "bench", "decision": "admitted", "layer": "number", "scope": "+14155550100",
    "reason": "admitted", "queue": None, "retry_after_s": None, "message": None,
    "lease": {"account": "acme-clinics", "expires_at": 1.8e9, "ttl_s": 30.0,
              "admitted_at": 1.8e9, "keys": {"openai-realtime": "key-a", "deepgram": "stt-main"}},
}
RELEASED = {"released": True, "cancelled": False}


def callgate_app() -> Any:
    from callgate.service.app import create_app

    stack = roomy_stack(HTTP_CAP, HTTP_CPS)
    return create_app(Gate(stack, MemoryStore(Gate.limits_for(stack)), system_clock))


async def _acquire(request: Request) -> JSONResponse:
    return JSONResponse(ADMITTED)


async def _release(request: Request) -> JSONResponse:
    return JSONResponse(RELEASED)


def bare_app() -> Starlette:
    return Starlette(routes=[
        Route("/v1/calls", _acquire, methods=["POST"]),
        Route("/v1/calls/{call_id}", _release, methods=["DELETE"]),
    ])
