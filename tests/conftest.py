"""Fixtures shared by the whole suite: stores of every kind, gates on a fake clock."""

from __future__ import annotations

import os
import random
import secrets
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from callgate.config import Stack, parse_stack
from callgate.gate import Gate
from callgate.stores import MemoryStore, SqliteStore
from callgate.stores.base import Limits, Store
from callgate.testing import FakeClock

settings.register_profile(
    "ci", max_examples=30, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=500, stateful_step_count=80, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

STORE_KINDS = ["memory", "sqlite", "redis", "redis-cluster"]

StoreFactory = Callable[[Limits], Store]


def make_store(kind: str, directory: Path) -> StoreFactory:
    def build(limits: Limits) -> Store:
        if kind == "memory":
            return MemoryStore(limits)
        if kind in ("redis", "redis-cluster"):
            from tests.stores import redis_server

            from callgate.stores.redis import RedisStore

            url = redis_server.shared_url() if kind == "redis" else (
                redis_server.shared_cluster_url())
            # A fresh hash tag per store: every store starts empty, on any server. (Not from
            # ``random``: hypothesis seeds it, so every example would share one tag.)
            return RedisStore.from_url(f"{url}?prefix=t{secrets.token_hex(8)}", limits)
        return SqliteStore(directory / f"gate-{random.random():.12f}.db", limits)

    return build


@pytest.fixture(scope="session", autouse=True)
def _stop_redis_servers() -> Iterator[None]:
    """Stop the Redis servers that tests started (lazily, on first use) at the session's end."""
    yield
    started = sys.modules.get("tests.stores.redis_server")
    if started is not None:
        started.stop_shared()


@pytest.fixture(params=STORE_KINDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of fresh stores of each kind (the contract suite runs on every store)."""
    make = make_store(request.param, tmp_path)
    built: list[Store] = []

    def build(limits: Limits) -> Store:
        built.append(make(limits))
        return built[-1]

    yield build
    # Closed here, not whenever the garbage collector gets to them: an unclosed Redis
    # socket's ResourceWarning would fail whichever test happens to be running then.
    for store in built:
        store.close()


def stack_from(text: str) -> Stack:
    return parse_stack(tomllib.loads(text))


GateFactory = Callable[..., tuple[Gate, FakeClock]]


@pytest.fixture
def make_gate(store_factory: StoreFactory) -> GateFactory:
    """Build a gate for a TOML stack on the parametrized store, with a fake clock."""

    def build(text: str, seed: int = 0) -> tuple[Gate, FakeClock]:
        stack = stack_from(text)
        clock = FakeClock()
        store = store_factory(Gate.limits_for(stack))
        return Gate(stack, store, clock, rng=random.Random(seed)), clock

    return build


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the event loop uvicorn and the client use)."""
    return "asyncio"
