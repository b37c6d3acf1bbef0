"""Fixtures for the Redis store tests: the shared real server, a fresh hash tag per test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import redis
from tests.stores import redis_server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a real ``redis-server`` on 127.0.0.1 (started once, stopped at the end)."""
    yield redis_server.shared_url()
    redis_server.stop_shared()


@pytest.fixture
def store_url(redis_url: str) -> str:
    """``redis_url`` after FLUSHDB, with a hash tag of its own: the test starts empty."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    return f"{redis_url}?prefix=t{secrets.token_hex(8)}"


@pytest.fixture
def own_server() -> Iterator[redis_server.RedisServer]:
    """A server of the test's own, to stop, restart or configure (stopped after the test)."""
    redis_server.require()
    server = redis_server.RedisServer().start()
    yield server
    server.cleanup()
