"""Stores: where slots, windows, leases and queues live (memory, SQLite, Redis)."""

from __future__ import annotations

from callgate.stores.base import Limits, Store
from callgate.stores.memory import MemoryStore
from callgate.stores.sqlite import SqliteStore


def open_store(url: str, limits: Limits) -> Store:
    """A store for ``url``: ``memory://``, ``sqlite:///path.db``, ``redis://host:port/db``,
    ``rediss://...`` or ``redis+cluster://host:port`` (see :mod:`callgate.stores.redis`)."""
    if url.startswith("memory://"):
        return MemoryStore(limits)
    if url.startswith("sqlite:///"):
        return SqliteStore.from_url(url, limits)
    if url.startswith(("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")):
        try:
            from callgate.stores.redis import RedisStore
        except ImportError as exc:  # the optional extra is not installed
            raise ValueError(f"store URL {url.split('@')[-1]!r} needs the Redis client: "
                             "pip install 'callgate[redis]'") from exc
        return RedisStore.from_url(url, limits)
    raise ValueError(f"unknown store URL {url!r}; accepted: memory://, sqlite:///path.db, "
                     "redis://host:port/db, rediss://..., redis+cluster://host:port")


__all__ = ["Limits", "MemoryStore", "SqliteStore", "Store", "open_store"]
