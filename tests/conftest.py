"""Fixtures shared by the whole suite: stores of every kind, gates on a fake clock."""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from tests import error_answers
from tests.closing import close_opened, closing

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


@pytest.fixture(autouse=True)
def _close_what_the_test_opened() -> Iterator[None]:
    """Whatever a test passed to ``tests.closing.closing`` is closed when it ends."""
    yield
    close_opened()


@pytest.fixture(params=STORE_KINDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """A factory of fresh stores of each kind (the contract suite runs on every store),
    each closed when the test ends (tests/closing.py)."""
    make = make_store(request.param, tmp_path)

    def build(limits: Limits) -> Store:
        return closing(make(limits))

    return build


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


# every error answer the suite receives, judged at the end against the OpenAPI -----------
def _callgate_document(app: object) -> dict[str, Any] | None:
    from fastapi import FastAPI

    if isinstance(app, FastAPI) and app.title == "callgate":
        return app.openapi()
    return None


@pytest.fixture(scope="session", autouse=True)
def _collect_error_answers() -> Iterator[None]:
    """Keep every error answer a callgate app gives a test (in process or over a socket)."""
    async_send, sync_send = httpx.AsyncClient.send, httpx.Client.send
    # A real server's document, fetched once per test (a port may serve another app later).
    documents: dict[tuple[str, str], dict[str, Any] | None] = {}

    async def send_async(self: httpx.AsyncClient, request: httpx.Request,
                         **kwargs: Any) -> httpx.Response:
        response = await async_send(self, request, **kwargs)
        if response.status_code >= 400 and not kwargs.get("stream"):
            transport = self._transport
            if isinstance(transport, httpx.ASGITransport):
                error_answers.record(_callgate_document(transport.app), response)
            elif request.url.host in ("127.0.0.1", "localhost"):
                key = _server_key(request)
                if key not in documents:
                    with contextlib.suppress(httpx.HTTPError):  # not ours, or gone
                        documents[key] = _json_or_none(await async_send(self, httpx.Request(
                            "GET", request.url.copy_with(path="/openapi.json", query=None))))
                error_answers.record(documents.get(key), response)
        return response

    def send_sync(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = sync_send(self, request, **kwargs)
        if (response.status_code >= 400 and not kwargs.get("stream")
                and request.url.host in ("127.0.0.1", "localhost")):
            key = _server_key(request)
            if key not in documents:
                with contextlib.suppress(httpx.HTTPError):  # not ours, or gone
                    documents[key] = _json_or_none(sync_send(self, httpx.Request(
                        "GET", request.url.copy_with(path="/openapi.json", query=None))))
            error_answers.record(documents.get(key), response)
        return response

    httpx.AsyncClient.send = send_async  # type: ignore[method-assign]
    httpx.Client.send = send_sync  # type: ignore[method-assign]
    try:
        yield
    finally:
        httpx.AsyncClient.send = async_send  # type: ignore[method-assign]
        httpx.Client.send = sync_send  # type: ignore[method-assign]


def _server_key(request: httpx.Request) -> tuple[str, str]:
    return os.environ.get("PYTEST_CURRENT_TEST", ""), f"{request.url.host}:{request.url.port}"


def _json_or_none(response: httpx.Response) -> dict[str, Any] | None:
    try:
        document = response.json()
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The judge of error answers runs last, after every test that received one."""
    items.sort(key=lambda item: item.path.name == error_answers.JUDGE)
