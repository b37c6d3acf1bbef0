"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams.

``workers`` connections each loop ``POST /v1/calls`` then ``DELETE /v1/calls/{id}``
until ``pairs`` pairs are done. Raw streams keep the client's own cost low (it shares
the machine with the server) and identical for every server it is pointed at.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass


class LoadError(RuntimeError):
    """The server answered something a benchmark pair must not get."""


@dataclass(frozen=True)
class LoadResult:
    pairs: int
    seconds: float
    latencies_s: tuple[float, ...]

    @property
    def rate(self) -> float:
        return self.pairs / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise LoadError(f"response without Content-Length: {head!r}")
    return status, await reader.readexactly(length)


async def _worker(host: str, port: int, tag: str, numbers: Sequence[str],
                  counter: itertools.count[int], pairs: int, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for index in counter:
            if index >= pairs:
                return
            call_id = f"{tag}-{index}"
            body = json.dumps({"call_id": call_id, "direction": "inbound",
                               "number": numbers[index % len(numbers)]}).encode()
            started = time.perf_counter()
            writer.write(b"POST /v1/calls HTTP/1.1\r\nHost: %s\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (host.encode(), len(body), body))
            status, payload = await _response(reader)
            if status != 200 or b'"admitted"' not in payload:
                raise LoadError(f"POST /v1/calls {call_id}: {status} {payload[:300]!r}")
            writer.write(b"DELETE /v1/calls/%s HTTP/1.1\r\nHost: %s\r\n\r\n"
                         % (call_id.encode(), host.encode()))
            status, payload = await _response(reader)
            if status != 200:
                raise LoadError(f"DELETE /v1/calls/{call_id}: {status} {payload[:300]!r}")
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()
        await writer.wait_closed()


async def _load(host: str, port: int, tag: str, numbers: Sequence[str], pairs: int,
                workers: int, timeout_s: float) -> LoadResult:
    counter = itertools.count()
    latencies: list[float] = []
    started = time.perf_counter()
    async with asyncio.timeout(timeout_s):
        await asyncio.gather(*(
            _worker(host, port, tag, numbers, counter, pairs, latencies) for _ in range(workers)
        ))
    return LoadResult(pairs, time.perf_counter() - started, tuple(latencies))


def run_load(host: str, port: int, tag: str, numbers: Sequence[str], pairs: int,
             workers: int, timeout_s: float = 120.0) -> LoadResult:
    """POST + DELETE ``pairs`` times over ``workers`` keep-alive connections (bounded time)."""
    return asyncio.run(_load(host, port, tag, numbers, pairs, workers, timeout_s))
