"""The uvicorn server `callgate serve` runs, built in one place (tests build the same).

Forwarded headers are callgate's to judge: uvicorn would otherwise apply
``X-Forwarded-For``/``X-Forwarded-Proto`` itself, from any peer in its
``forwarded_allow_ips`` (loopback by default), before callgate's ``trusted_proxies`` check
ever ran. A local process could then pose as a trusted proxy and choose the URL webhook
signatures are checked against. With uvicorn's handling off, the peer callgate sees is the
real one, and ``[twilio] trusted_proxies`` alone decides whose forwarded headers count.

The server stack is uvicorn's fastest: the httptools parser and the uvloop event loop (both
installed by ``uvicorn[standard]``, a dependency), named here rather than left to uvicorn's
"auto" so that a missing one is said at start-up instead of silently costing throughput
(issue 16 measured callgate 1.3-1.5x faster on them than on h11 + asyncio). uvicorn's access
line is off unless asked for (``serve --access-log``): the decision log already says, for
every call, what was asked and answered, and with the access line on ``serve`` answered
POST + DELETE pairs at 0.62x the rate (median of 5 wrk rounds, same machine and run).
"""

from __future__ import annotations

import importlib.util
import logging
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from callgate.service.stream import EventStreams

GRACEFUL_SHUTDOWN_S = 10
log = logging.getLogger("callgate.serve")


def server_stack() -> tuple[str, str]:
    """uvicorn's (http, loop) settings: httptools and uvloop, or the pure-Python pair.

    The fallback is for a platform where ``uvicorn[standard]`` leaves one out (uvloop has no
    Windows build); it works, slower, and :func:`server_config` says so.
    """
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return http, loop


def server_config(app: ASGIApp, *, host: str, port: int, log_level: str,
                  json_logs: bool, access_log: bool = False) -> uvicorn.Config:
    """uvicorn's settings for ``app``; ``json_logs`` routes uvicorn's loggers to the root's.

    ``access_log`` turns on uvicorn's line per request (off: the decision log is the
    access log of the calls).
    """
    # In JSON mode uvicorn's own loggers go through the root handler too, so every line
    # is JSON; in text mode uvicorn keeps its familiar format.
    extra: dict[str, Any] = {"log_config": None} if json_logs else {}
    http, loop = server_stack()
    if (http, loop) != ("httptools", "uvloop"):
        log.warning("serving on uvicorn's %s parser and %s loop: install uvicorn[standard] "
                    "(httptools, uvloop) for more throughput", http, loop)
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=access_log,
        # No route is a WebSocket: "none" keeps uvicorn from importing a websockets
        # implementation at all (and from its deprecation warnings on newer websockets).
        http=http, loop=loop, ws="none", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
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
