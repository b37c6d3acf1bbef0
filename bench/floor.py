"""The floor: the least an atomic admit + release over N scopes can cost in Python.

A plain dict of counters under one ``threading.Lock``: check every scope has room,
increment them all, remember the lease in a dict; on release pop the lease and
decrement. No windows' timestamps, no key choice, no queue, no expiry, no
idempotency: everything callgate does beyond this is what its ratio to the floor pays for.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable


class Floor:
    def __init__(self, caps: dict[str, int]) -> None:
        self._caps = dict(caps)
        self._in_use = dict.fromkeys(caps, 0)
        self._leases: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def acquire(self, call_id: str, scopes: Iterable[str]) -> bool:
        scopes = tuple(scopes)
        with self._lock:
            for scope in scopes:
                if self._in_use[scope] >= self._caps[scope]:
                    return False
            for scope in scopes:
                self._in_use[scope] += 1
            self._leases[call_id] = scopes
            return True

    def release(self, call_id: str) -> bool:
        with self._lock:
            scopes = self._leases.pop(call_id, None)
            if scopes is None:
                return False
            for scope in scopes:
                self._in_use[scope] -= 1
            return True
