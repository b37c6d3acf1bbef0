"""The memory store: one process, one lock, the fastest; the simulator uses it."""

from __future__ import annotations

import heapq
import threading
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable

from callgate.stores import kernel
from callgate.stores.base import (
    DISABLED,
    Claim,
    Limits,
    Record,
    RenewOutcome,
    UsageSnapshot,
    Verdict,
)


class _Counts(dict[str, int]):
    """Slots in use per key; a key never used reads 0.

    A key whose count falls back to 0 is kept rather than deleted: the set of keys is
    bounded by the stack, and reading a count is then one lookup in C.
    """

    def __missing__(self, key: str) -> int:
        return 0


class _MemoryState:
    """Dicts and heaps behind :class:`kernel.State`; the store's lock guards every call."""

    in_use: Callable[[str], int]

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.records: dict[tuple[str, str], Record] = {}
        self.slots = _Counts()
        # The kernel reads counts many times per decision: a bound C method, not a Python one.
        self.in_use = self.slots.__getitem__
        self.window_log: dict[str, deque[float]] = {}
        self.cooldowns: dict[tuple[str, str], float] = {}
        self.queues: dict[str, list[tuple[int, int, Record]]] = {}
        self.lease_heap: list[tuple[float, str, str]] = []
        self.tomb_heap: list[tuple[float, str, str]] = []
        self.seq = 0
        self.leases = 0

    # records --------------------------------------------------------------
    def get(self, account: str | None, call_id: str) -> Record | None:
        records = self.records
        if account is not None:
            return records.get((account, call_id))
        # A live lease or queue entry first: an old tombstone of another account with the
        # same id must not hide it; else the first account's (in config order).
        first = None
        for name in self.limits.accounts:
            record = records.get((name, call_id))
            if record is not None:
                if record.state in ("leased", "queued"):
                    return record
                if first is None:
                    first = record
        return first

    def put(self, record: Record) -> None:
        ident = (record.account, record.call_id)
        state = record.state
        # Records are values (base.Record): the one this replaces is what was indexed.
        before = self.records.get(ident)
        was_leased = before is not None and before.state == "leased"
        was_queued = before is not None and before.state == "queued"
        if was_queued and state != "queued":
            assert before is not None
            entries = self.queues[record.number]
            entries[:] = [e for e in entries if e[2] is not before]
            if not entries:
                del self.queues[record.number]
        if state == "leased":
            heapq.heappush(self.lease_heap, (record.expires_at, *ident))
            if not was_leased:
                self.leases += 1
        else:
            if was_leased:
                self.leases -= 1
            if state == "queued":
                entry = (-record.priority, record.seq, record)
                entries = self.queues.setdefault(record.number, [])
                if was_queued:  # polled: the same place in the queue
                    at = bisect_left(entries, entry[:2], key=lambda e: (e[0], e[1]))
                    entries[at] = entry
                else:
                    insort(entries, entry, key=lambda e: (e[0], e[1]))
            else:  # rejected or ended: a tombstone
                heapq.heappush(self.tomb_heap, (record.until, *ident))
        self.records[ident] = record

    # slots and windows ----------------------------------------------------
    def add(self, key: str, delta: int) -> None:
        self.slots[key] += delta

    def add_held(self, held: Iterable[tuple[str, int]], sign: int) -> None:
        """The kernel's optional fast path: ``add(key, sign * units)`` for every pair."""
        slots = self.slots
        for key, units in held:
            slots[key] += sign * units

    def _pruned(self, key: str, since: float) -> deque[float]:
        log = self.window_log.get(key)
        if log is None:
            return deque()
        while log and log[0] <= since:
            log.popleft()
        return log

    def count_since(self, key: str, since: float) -> int:
        # _pruned inlined: the kernel asks once per window per decision.
        log = self.window_log.get(key)
        if log is None:
            return 0
        while log and log[0] <= since:
            log.popleft()
        return len(log)

    def nth_since(self, key: str, since: float, n: int) -> float:
        return self._pruned(key, since)[n]

    def log_event(self, key: str, at: float) -> None:
        self.window_log.setdefault(key, deque()).append(at)

    def cooldown_until(self, provider: str, alias: str) -> float | None:
        cooldowns = self.cooldowns
        return cooldowns.get((provider, alias)) if cooldowns else None

    # due work -------------------------------------------------------------
    def settle(self, now: float) -> bool:
        """The kernel's optional fast path (:class:`kernel.Settling`).

        Drops lease-heap entries that no longer match their record (released or renewed
        leases leave them behind) and tombstones past their time, then says whether
        nothing else is due: no lease past its expiry and no call queued.
        """
        if self.queues:
            return False
        heap = self.lease_heap
        records = self.records
        while heap and heap[0][0] <= now:
            expires_at, account, call_id = heap[0]
            record = records.get((account, call_id))
            if record is not None and record.state == "leased" and record.expires_at == expires_at:
                return False
            heapq.heappop(heap)
        tombs = self.tomb_heap
        if tombs and tombs[0][0] <= now:
            self.purge(now)
        return True

    def due_leases(self, now: float) -> list[Record]:
        due: list[Record] = []
        heap = self.lease_heap
        while heap and heap[0][0] <= now:
            expires_at, account, call_id = heapq.heappop(heap)
            record = self.records.get((account, call_id))
            # Renewals push a new heap entry; only the one matching the record counts, and
            # only once (two renewals at one instant push two equal entries).
            if (record is not None and record.state == "leased"
                    and record.expires_at == expires_at and (not due or due[-1] is not record)):
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

    def queue_heads(self) -> list[Record]:
        return [entries[0][2] for entries in self.queues.values()]

    def any_queued(self) -> bool:
        return bool(self.queues)

    def queue_of(self, number: str) -> list[Record]:
        return [entry[2] for entry in self.queues.get(number, ())]

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


class MemoryStore:
    """Every primitive under one ``threading.Lock``; state is lost when the process ends."""

    does_io = False

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
