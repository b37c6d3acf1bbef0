"""The load tester's HTTP side: every request timed and its failures counted by kind.

:class:`TimingTransport` wraps the httpx transport under the tester's clients: it times
each request (acquire, renew, release, usage, provider error) and counts those that got
no answer at all (a timeout, a network error) or an HTTP 5xx; with the answers the client
cannot read, these are the load test's *silent failures*.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

import httpx

from callgate.client import GateProtocolError, GateUnavailableError


def request_kind(request: httpx.Request) -> str:
    """``acquire``, ``renew``, ``release``, ``usage``, ``provider_error`` or ``other``."""
    path, method = request.url.path, request.method
    if path == "/v1/calls" and method == "POST":
        return "acquire"
    if path.startswith("/v1/calls/"):
        return "renew" if path.endswith("/renew") else "release"
    if path == "/v1/usage":
        return "usage"
    return "provider_error" if path.startswith("/v1/providers/") else "other"


class TimingTransport(httpx.AsyncBaseTransport):
    """Times every request and counts those that got no answer or a 5xx (by kind)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.latency_ms: defaultdict[str, list[float]] = defaultdict(list)
        self.failures: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        kind = request_kind(request)
        started = time.perf_counter()
        try:
            response = await self._inner.handle_async_request(request)
            await response.aread()
        except httpx.TimeoutException:
            self.failures[f"{kind}: timeout"] += 1
            raise
        except httpx.TransportError as exc:
            self.failures[f"{kind}: {type(exc).__name__}"] += 1
            raise
        self.latency_ms[kind].append((time.perf_counter() - started) * 1000)
        if response.status_code >= 500:
            self.failures[f"{kind}: HTTP {response.status_code}"] += 1
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def read_usage(url: str, token: str | None = None, timeout_s: float = 5.0,
                     transport: httpx.AsyncBaseTransport | None = None) -> dict[str, Any]:
    """``GET /v1/usage`` of the gate at ``url``; raises GateUnavailableError or
    GateProtocolError saying what went wrong."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout_s,
                                 transport=transport) as http:
        try:
            response = await http.get("/v1/usage")
        except httpx.HTTPError as exc:
            raise GateUnavailableError(f"GET {url}/v1/usage: cannot reach the gate "
                                       f"({type(exc).__name__}: {exc})") from None
    if response.status_code in (401, 403):
        raise GateUnavailableError(
            f"GET {url}/v1/usage answered HTTP {response.status_code}: this token may not read "
            "the usage document; pass --config with the gate's stack, or an admin --token",
            status_code=response.status_code)
    if response.status_code != 200:
        raise GateUnavailableError(f"GET {url}/v1/usage answered HTTP {response.status_code}",
                                   status_code=response.status_code)
    try:
        document = response.json()
    except ValueError:
        raise GateProtocolError(f"GET {url}/v1/usage: the answer is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("layers"), list):
        raise GateProtocolError(f"GET {url}/v1/usage: no 'layers' list in the answer")
    return document
