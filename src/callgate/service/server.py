"""The uvicorn server `callgate serve` runs, built in one place (tests build the same).

Forwarded headers are callgate's to judge: uvicorn would otherwise apply
``X-Forwarded-For``/``X-Forwarded-Proto`` itself, from any peer in its
``forwarded_allow_ips`` (loopback by default), before callgate's ``trusted_proxies`` check
ever ran. A local process could then pose as a trusted proxy and choose the URL webhook
signatures are checked against. With uvicorn's handling off, the peer callgate sees is the
real one, and ``[twilio] trusted_proxies`` alone decides whose forwarded headers count.
"""

from __future__ import annotations

from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from callgate.service.stream import EventStreams

GRACEFUL_SHUTDOWN_S = 10


def server_config(app: ASGIApp, *, host: str, port: int, log_level: str,
                  json_logs: bool) -> uvicorn.Config:
    """uvicorn's settings for ``app``; ``json_logs`` routes uvicorn's loggers to the root's."""
    # In JSON mode uvicorn's own loggers go through the root handler too, so every line
    # is JSON; in text mode uvicorn keeps its familiar format.
    extra: dict[str, Any] = {"log_config": None} if json_logs else {}
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        proxy_headers=False, forwarded_allow_ips=[], **extra)


def draining_server(config: uvicorn.Config, streams: EventStreams) -> uvicorn.Server:
    """uvicorn's server, which also ends the open event streams when a signal starts the drain.

    uvicorn waits for every open response before it exits, and an event stream never ends
    by itself: without this, a headroom page left open would hold SIGTERM for the whole
    graceful timeout.
    """
    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            streams.close()
            super().handle_exit(sig, frame)

    return DrainingServer(config)
