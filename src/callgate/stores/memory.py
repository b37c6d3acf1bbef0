"""The memory store: one process, one lock, the fastest; the simulator uses it."""

from __future__ import annotations

import heapq
import threading
from bisect import insort
from collections import deque

from callgate.stores import kernel
from callgate.stores.base import (
    Claim,
    Limits,
    Record,
    RenewOutcome,
    UsageSnapshot,
    Verdict,
)

DISABLED = float("inf")


class _MemoryState:
    """Dicts and heaps behind :class:`kernel.State`; the store's lock guards every call."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.records: dict[tuple[str, str], Record] = {}
        self.indexed: dict[tuple[str, str], str] = {}
        self.slots: dict[str, int] = {}
        self.window_log: dict[str, deque[float]] = {}
        self.cooldowns: dict[tuple[str, str], float] = {}
        self.queues: dict[str, list[tuple[int, int, Record]]] = {}
        self.lease_heap: list[tuple[float, str, str]] = []
        self.tomb_heap: list[tuple[float, str, str]] = []
        self.seq = 0
        self.leases = 0

    # records --------------------------------------------------------------
    def get(self, account: str | None, call_id: str) -> Record | None:
        if account is not None:
            return self.records.get((account, call_id))
        # A live lease or queue entry first: an old tombstone of another account with the
        # same id must not hide it.
        found = [r for name in self.limits.accounts
                 if (r := self.records.get((name, call_id))) is not None]
        live = [r for r in found if r.state in ("leased", "queued")]
        best = live or found
        return best[0] if best else None

    def put(self, record: Record) -> None:
        ident = (record.account, record.call_id)
        # Records are mutated in place by the kernel, so the state they were last indexed
        # under is kept apart.
        previous = self.indexed.get(ident)
        was_leased = previous == "leased"
        was_queued = previous == "queued"
        if was_queued and record.state != "queued":
            entries = self.queues[record.number]
            entries[:] = [e for e in entries if e[2] is not record]
            if not entries:
                del self.queues[record.number]
        if record.state == "queued" and not was_queued:
            insort(self.queues.setdefault(record.number, []),
                   (-record.priority, record.seq, record), key=lambda e: (e[0], e[1]))
        if record.state == "leased":
            heapq.heappush(self.lease_heap, (record.expires_at, *ident))
            self.leases += 0 if was_leased else 1
        elif was_leased:
            self.leases -= 1
        if record.state in ("rejected", "ended"):
            heapq.heappush(self.tomb_heap, (record.until, *ident))
        self.indexed[ident] = record.state
        self.records[ident] = record

    # slots and windows ----------------------------------------------------
    def in_use(self, key: str) -> int:
        return self.slots.get(key, 0)

    def add(self, key: str, delta: int) -> None:
        value = self.slots.get(key, 0) + delta
        if value:
            self.slots[key] = value
        else:
            self.slots.pop(key, None)

    def _pruned(self, key: str, since: float) -> deque[float]:
        log = self.window_log.get(key)
        if log is None:
            return deque()
        while log and log[0] <= since:
            log.popleft()
        return log

    def count_since(self, key: str, since: float) -> int:
        return len(self._pruned(key, since))

    def nth_since(self, key: str, since: float, n: int) -> float:
        return self._pruned(key, since)[n]

    def log_event(self, key: str, at: float) -> None:
        self.window_log.setdefault(key, deque()).append(at)

    def cooldown_until(self, provider: str, alias: str) -> float | None:
        return self.cooldowns.get((provider, alias))

    # due work -------------------------------------------------------------
    def due_leases(self, now: float) -> list[Record]:
        due = []
        heap = self.lease_heap
        while heap and heap[0][0] <= now:
            expires_at, account, call_id = heapq.heappop(heap)
            record = self.records.get((account, call_id))
            # Renewals push a new heap entry; only the one matching the record counts.
            if record is not None and record.state == "leased" and record.expires_at == expires_at:
                due.append(record)
        return due

    def due_queued(self, now: float) -> list[Record]:
        if not self.queues:
            return []
        poll = self.limits.poll_timeout_s
        return [
            record
            for entries in self.queues.values()
            for _, _, record in entries
            if record.deadline <= now or record.last_poll + poll <= now
        ]

    def purge(self, now: float) -> None:
        heap = self.tomb_heap
        while heap and heap[0][0] <= now:
            until, account, call_id = heapq.heappop(heap)
            record = self.records.get((account, call_id))
            ended = record is not None and record.state in ("rejected", "ended")
            if ended and record is not None and record.until == until:
                del self.records[(account, call_id)]
                del self.indexed[(account, call_id)]

    def queue_heads(self) -> list[Record]:
        return [entries[0][2] for entries in self.queues.values()]

    def queue_of(self, number: str) -> list[Record]:
        return [entry[2] for entry in self.queues.get(number, ())]

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


class MemoryStore:
    """Every primitive under one ``threading.Lock``; state is lost when the process ends."""

    def __init__(self, limits: Limits) -> None:
        self._lock = threading.Lock()
        self._st = _MemoryState(limits)

    def configure(self, limits: Limits) -> None:
        with self._lock:
            self._st.limits = limits

    def acquire(self, claim: Claim, now: float) -> Verdict:
        with self._lock:
            return kernel.acquire(self._st, claim, now)

    def renew(
        self, account: str | None, call_id: str, ttl_s: float | None, now: float
    ) -> RenewOutcome:
        with self._lock:
            return kernel.renew(self._st, account, call_id, ttl_s, now)

    def release(self, account: str | None, call_id: str, now: float) -> tuple[bool, bool]:
        with self._lock:
            return kernel.release(self._st, account, call_id, now)

    def tombstone(self, record: Record) -> None:
        with self._lock:
            if self._st.get(record.account, record.call_id) is None:
                self._st.put(record)

    def cooldown(self, provider: str, alias: str, until: float) -> None:
        with self._lock:
            self._st.cooldowns[(provider, alias)] = until

    def clear_disabled(self, now: float) -> None:
        with self._lock:
            st = self._st
            st.cooldowns = {k: u for k, u in st.cooldowns.items() if u != DISABLED and u > now}
            kernel.promote(st, now)

    def expire(self, now: float) -> int:
        with self._lock:
            return kernel.expire(self._st, now)

    def usage(self, now: float) -> UsageSnapshot:
        with self._lock:
            st = self._st
            kernel.expire(st, now)
            queue = [e[2] for entries in st.queues.values() for e in entries]
            cooldowns = [(f"{p}:{a}", u) for (p, a), u in st.cooldowns.items()]
            return kernel.usage(st, now, dict(st.slots), cooldowns, queue, st.leases)

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None
