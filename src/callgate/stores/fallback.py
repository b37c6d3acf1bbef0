"""``on_store_error = "admit_local"``: a store that admits in-process while its primary is down.

:class:`FallbackStore` wraps the gate's store (the primary). Every step goes to the
primary; when an acquire fails with a :class:`~callgate.errors.StoreError`, the call is
tried once more on an in-process :class:`~callgate.stores.memory.MemoryStore` holding
``local_fraction`` of every cap and window (never queued, never forced through in shadow
mode). A call admitted there is marked ``Verdict.local`` and stays there: its renew and
release go to the local store, found by (account, call id), and the entry is forgotten
when the call is released or its lease expires. Anything the local store cannot admit is
the primary's error again, and the gate answers ``store_unavailable``.

Provider cooldowns reach both stores; usage, tombstones and pings are the primary's: the
local leases are this process's alone and nobody else counts them.
"""

from __future__ import annotations

import dataclasses
import threading

from callgate.errors import StoreError
from callgate.stores.base import (
    Claim,
    Limits,
    Record,
    RenewOutcome,
    Store,
    UsageSnapshot,
    Verdict,
    VerdictKind,
)
from callgate.stores.memory import MemoryStore


class FallbackStore:
    """``primary``, and an in-process store for the calls admitted while it was down.

    ``fraction`` is the share of every cap and window the local store holds; ``None``
    admits nothing new locally (the stack switched back to ``reject``) while the calls
    already local are still renewed and released there.
    """

    def __init__(self, primary: Store, fraction: float | None) -> None:
        self.primary = primary
        self.fraction = fraction
        self.does_io = primary.does_io
        self._local: MemoryStore | None = None
        # call id -> account -> expires_at of its local lease (kept current by renew); the
        # gate calls from many threads, so this bookkeeping is under its own lock (the
        # local store has its own for the slots).
        self._calls: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    # the local side -------------------------------------------------------------
    def _held_by(self, account: str | None, call_id: str) -> str | None:
        """The account whose local lease ``call_id`` is (``account`` if named), if any."""
        with self._lock:
            accounts = self._calls.get(call_id)
            if not accounts:
                return None
            if account is None:
                return next(iter(accounts))
            return account if account in accounts else None

    def _remember(self, account: str, call_id: str, expires_at: float) -> None:
        with self._lock:
            self._calls.setdefault(call_id, {})[account] = expires_at

    def _forget(self, account: str, call_id: str) -> None:
        with self._lock:
            accounts = self._calls.get(call_id, {})
            accounts.pop(account, None)
            if not accounts:
                self._calls.pop(call_id, None)

    # Store ----------------------------------------------------------------------
    def configure(self, limits: Limits) -> None:
        self.primary.configure(limits)
        local_limits = limits.scaled(self.fraction or 1.0)
        if self._local is None:
            self._local = MemoryStore(local_limits)
        else:
            self._local.configure(local_limits)

    def acquire(self, claim: Claim, now: float) -> Verdict:
        local = self._local
        assert local is not None, "configure() comes first"
        if self._calls and self._held_by(claim.account, claim.call_id) is not None:
            return dataclasses.replace(local.acquire(claim, now), local=True)
        try:
            return self.primary.acquire(claim, now)
        except StoreError:
            if self.fraction is None:
                raise
            verdict = local.acquire(dataclasses.replace(claim, queue=None, force=False), now)
            if verdict.kind is not VerdictKind.ADMITTED or verdict.record is None:
                raise
            self._remember(claim.account, claim.call_id, verdict.record.expires_at)
            return dataclasses.replace(verdict, local=True)

    def renew(
        self, account: str | None, call_id: str, ttl_s: float | None, now: float
    ) -> RenewOutcome:
        held_by = self._held_by(account, call_id) if self._calls else None
        if held_by is None:
            return self.primary.renew(account, call_id, ttl_s, now)
        assert self._local is not None
        outcome = self._local.renew(held_by, call_id, ttl_s, now)
        if outcome.status == "renewed" and outcome.record is not None:
            self._remember(held_by, call_id, outcome.record.expires_at)
        else:
            self._forget(held_by, call_id)
        return outcome

    def release(self, account: str | None, call_id: str, now: float) -> tuple[bool, bool]:
        held_by = self._held_by(account, call_id) if self._calls else None
        if held_by is None:
            return self.primary.release(account, call_id, now)
        assert self._local is not None
        self._forget(held_by, call_id)
        return self._local.release(held_by, call_id, now)

    def tombstone(self, record: Record) -> None:
        self.primary.tombstone(record)

    def cooldown(self, provider: str, alias: str, until: float) -> None:
        self.primary.cooldown(provider, alias, until)
        if self._local is not None:
            self._local.cooldown(provider, alias, until)

    def clear_disabled(self, now: float) -> None:
        self.primary.clear_disabled(now)
        if self._local is not None:
            self._local.clear_disabled(now)

    def expire(self, now: float) -> int:
        if self._local is not None and self._calls:
            self._local.expire(now)
            with self._lock:  # judged and removed in one hold: a renew may move an expiry
                for call_id, accounts in list(self._calls.items()):
                    for account, expires_at in list(accounts.items()):
                        if expires_at <= now:
                            del accounts[account]
                    if not accounts:
                        del self._calls[call_id]
        return self.primary.expire(now)

    def usage(self, now: float) -> UsageSnapshot:
        return self.primary.usage(now)

    def ping(self) -> None:
        self.primary.ping()

    def close(self) -> None:
        self.primary.close()
        if self._local is not None:
            self._local.close()
