"""Stores: where slots, windows, leases and queues live (memory, SQLite)."""

from __future__ import annotations

from callgate.stores.base import Limits, Store
from callgate.stores.memory import MemoryStore
from callgate.stores.sqlite import SqliteStore


def open_store(url: str, limits: Limits) -> Store:
    """A store for ``url``: ``memory://`` or ``sqlite:///path.db``."""
    if url.startswith("memory://"):
        return MemoryStore(limits)
    if url.startswith("sqlite:///"):
        return SqliteStore.from_url(url, limits)
    raise ValueError(f"unknown store URL {url!r}; accepted: memory://, sqlite:///path.db")


__all__ = ["Limits", "MemoryStore", "SqliteStore", "Store", "open_store"]
