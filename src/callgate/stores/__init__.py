"""Stores: where slots, windows, leases and queues live (memory, SQLite, Redis)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from callgate.stores.base import Limits, Store
from callgate.stores.memory import MemoryStore
from callgate.stores.redis_options import SCHEMES, check_sharing  # no redis-py needed
from callgate.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from callgate.config import Stack


def open_store(url: str, limits: Limits) -> Store:
    """A store for ``url``: ``memory://``, ``sqlite:///path.db``, ``redis://host:port/db``,
    ``rediss://...`` or ``redis+cluster://host:port`` (see :mod:`callgate.stores.redis`)."""
    if url.startswith("memory://"):
        return MemoryStore(limits)
    if url.startswith("sqlite:///"):
        return SqliteStore.from_url(url, limits)
    if url.startswith(SCHEMES):
        try:
            from callgate.stores.redis import RedisStore
        except ImportError as exc:  # the optional extra is not installed
            raise ValueError(f"store URL {url.split('@')[-1]!r} needs the Redis client: "
                             "pip install 'callgate[redis]'") from exc
        return RedisStore.from_url(url, limits)
    raise ValueError(f"unknown store URL {url!r}; accepted: memory://, sqlite:///path.db, "
                     "redis://host:port/db, rediss://..., redis+cluster://host:port")


def open_shared_store(stack: Stack, limits: Limits) -> Store:
    """``[gate] store`` of ``stack``, as every process sharing it opens it (serve, dial, sip).

    A Redis ``?sharing=account`` the stack cannot use (accounts sharing a trunk, pool or
    resource) is a :class:`~callgate.errors.ConfigError`; an unreachable store a StoreError.
    """
    url = stack.gate.store
    if url.startswith(SCHEMES):
        check_sharing(stack)
    return open_store(url, limits)


__all__ = ["Limits", "MemoryStore", "SqliteStore", "Store", "open_shared_store", "open_store"]
