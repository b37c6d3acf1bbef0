"""Helpers for testing code that uses callgate: a fake clock and an in-memory gate."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette

from callgate.config import Stack
from callgate.gate import Gate
from callgate.stores.memory import MemoryStore


class FakeClock:
    """A clock that moves only when told to, and never backwards (epoch seconds)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance by {seconds} s)")
        self.now += seconds
        return self.now

    def jump(self, to: float) -> float:
        if to < self.now:
            raise ValueError(f"a clock cannot go backwards (from {self.now} to {to})")
        self.now = to
        return self.now


def memory_gate(stack: Stack, clock: FakeClock | None = None, seed: int = 0) -> Gate:
    """A gate on a fresh memory store with a fake clock (``gate.clock``) and a seeded rng."""
    return Gate(stack, MemoryStore(Gate.limits_for(stack)), clock or FakeClock(),
                rng=random.Random(seed))


@asynccontextmanager
async def serving(
    app: Starlette,
    *,
    client: tuple[str, int] = ("127.0.0.1", 123),
    raise_app_exceptions: bool = True,
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to ``app`` in-process (no sockets), its lifespan running.

    ``client`` is the peer address the app sees (webhook proxy rules read it).
    """
    transport = httpx.ASGITransport(app=app, client=client,
                                    raise_app_exceptions=raise_app_exceptions)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=transport, base_url="http://callgate.test") as http:
        yield http
