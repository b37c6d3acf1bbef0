"""The SQLite store: one file, WAL, one ``BEGIN IMMEDIATE`` transaction per primitive.

The default for ``callgate serve``. Leases and queue entries live in the file, so they
survive a restart, and several gate processes on one host can share it: SQLite's write
lock makes each primitive atomic across processes. A writer that cannot get the lock
within the busy timeout gets :class:`~callgate.errors.StoreError`, which the gate turns
into the configured ``on_store_error`` decision.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from callgate.errors import StoreError
from callgate.stores import kernel
from callgate.stores.base import Claim, Limits, Record, RenewOutcome, UsageSnapshot, Verdict
from callgate.stores.codec import dump_record, load_record

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    account TEXT NOT NULL, call_id TEXT NOT NULL, state TEXT NOT NULL,
    number TEXT NOT NULL, priority INTEGER NOT NULL, seq INTEGER NOT NULL,
    expires_at REAL NOT NULL, until REAL NOT NULL, deadline REAL NOT NULL,
    last_poll REAL NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (account, call_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS calls_expiry ON calls (expires_at) WHERE state = 'leased';
CREATE INDEX IF NOT EXISTS calls_until ON calls (until) WHERE state IN ('rejected', 'ended');
CREATE INDEX IF NOT EXISTS calls_queue ON calls (number, priority DESC, seq)
    WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS calls_id ON calls (call_id);
CREATE TABLE IF NOT EXISTS slots (key TEXT PRIMARY KEY, in_use INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (key TEXT NOT NULL, at REAL NOT NULL, gone_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS events_key ON events (key, at);
CREATE INDEX IF NOT EXISTS events_gone ON events (gone_at);
CREATE TABLE IF NOT EXISTS cooldowns (
    provider TEXT NOT NULL, alias TEXT NOT NULL, until REAL NOT NULL,
    PRIMARY KEY (provider, alias)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('seq', 0);
"""

PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=OFF")


def path_from_url(url: str) -> str:
    """``sqlite:///callgate.db`` -> ``callgate.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r}; expected sqlite:///path/to/file.db")
    return url.removeprefix("sqlite:///")


class _SqliteState:
    """:class:`kernel.State` over one open transaction; slot counts are written at the end."""

    def __init__(self, db: sqlite3.Connection, limits: Limits, purge_due: bool) -> None:
        self.db = db
        self.limits = limits
        self.purge_due = purge_due
        self.slots: dict[str, int] = {}
        self.dirty: set[str] = set()
        self._cooldowns: dict[tuple[str, str], float] | None = None

    def prefetch(self, keys: list[str]) -> None:
        missing = [k for k in keys if k not in self.slots]
        if missing:
            marks = ",".join("?" * len(missing))
            rows = self.db.execute(f"SELECT key, in_use FROM slots WHERE key IN ({marks})",
                                   missing).fetchall()
            self.slots.update({key: 0 for key in missing})
            self.slots.update(dict(rows))

    def flush(self) -> None:
        if self.dirty:
            self.db.executemany(
                "INSERT INTO slots (key, in_use) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET in_use = excluded.in_use",
                [(key, self.slots[key]) for key in self.dirty],
            )
            self.dirty.clear()

    def get(self, account: str | None, call_id: str) -> Record | None:
        if account is None:
            # A live lease or queue entry first: an old tombstone of another account with
            # the same id must not hide it.
            row = self.db.execute(
                "SELECT body FROM calls WHERE call_id = ? "
                "ORDER BY state IN ('leased', 'queued') DESC, account LIMIT 1", (call_id,)
            ).fetchone()
        else:
            row = self.db.execute("SELECT body FROM calls WHERE account = ? AND call_id = ?",
                                  (account, call_id)).fetchone()
        if row is None:
            return None
        record = load_record(row[0])
        if record.held:  # a release or expiry will touch these: read them in one query
            self.prefetch([key for key, _ in record.held])
        return record

    def put(self, record: Record) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO calls (account, call_id, state, number, priority, seq, "
            "expires_at, until, deadline, last_poll, body) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (record.account, record.call_id, record.state, record.number, record.priority,
             record.seq, record.expires_at, record.until, record.deadline, record.last_poll,
             dump_record(record)),
        )

    def in_use(self, key: str) -> int:
        if key not in self.slots:
            self.prefetch([key])
        return self.slots[key]

    def add(self, key: str, delta: int) -> None:
        self.slots[key] = self.in_use(key) + delta
        self.dirty.add(key)

    def count_since(self, key: str, since: float) -> int:
        row = self.db.execute("SELECT count(*) FROM events WHERE key = ? AND at > ?",
                              (key, since)).fetchone()
        return int(row[0])

    def nth_since(self, key: str, since: float, n: int) -> float:
        row = self.db.execute(
            "SELECT at FROM events WHERE key = ? AND at > ? ORDER BY at LIMIT 1 OFFSET ?",
            (key, since, n)).fetchone()
        return float(row[0])

    def log_event(self, key: str, at: float) -> None:
        spec = self.limits.windows.get(key)
        if spec is None:  # a queued claim names a window a reload removed: nothing to count
            return
        period = spec[1]
        self.db.execute("INSERT INTO events (key, at, gone_at) VALUES (?, ?, ?)",
                        (key, at, at + period))

    def cooldown_until(self, provider: str, alias: str) -> float | None:
        if self._cooldowns is None:
            rows = self.db.execute("SELECT provider, alias, until FROM cooldowns").fetchall()
            self._cooldowns = {(p, a): u for p, a, u in rows}
        return self._cooldowns.get((provider, alias))

    def due_leases(self, now: float) -> list[Record]:
        rows = self.db.execute(
            "SELECT body FROM calls WHERE state = 'leased' AND expires_at <= ?", (now,)
        ).fetchall()
        records = [load_record(row[0]) for row in rows]
        self.prefetch(sorted({key for record in records for key, _ in record.held}))
        return records

    def due_queued(self, now: float) -> list[Record]:
        rows = self.db.execute(
            "SELECT body FROM calls WHERE state = 'queued' AND (deadline <= ? OR last_poll <= ?)",
            (now, now - self.limits.poll_timeout_s),
        ).fetchall()
        return [load_record(row[0]) for row in rows]

    def purge(self, now: float) -> None:
        if self.purge_due:
            self.db.execute(
                "DELETE FROM calls WHERE state IN ('rejected', 'ended') AND until <= ?", (now,)
            )
            self.db.execute("DELETE FROM events WHERE gone_at <= ?", (now,))

    def queue_heads(self) -> list[Record]:
        rows = self.db.execute(
            "SELECT number, body FROM calls WHERE state = 'queued' "
            "ORDER BY number, priority DESC, seq"
        ).fetchall()
        heads: dict[str, str] = {}
        for number, body in rows:
            heads.setdefault(number, body)
        return [load_record(body) for body in heads.values()]

    def queue_of(self, number: str) -> list[Record]:
        rows = self.db.execute(
            "SELECT body FROM calls WHERE state = 'queued' AND number = ? "
            "ORDER BY priority DESC, seq", (number,)
        ).fetchall()
        return [load_record(row[0]) for row in rows]

    def next_seq(self) -> int:
        row = self.db.execute(
            "UPDATE meta SET value = value + 1 WHERE name = 'seq' RETURNING value"
        ).fetchone()
        return int(row[0])


class SqliteStore:
    """A store in one SQLite file; safe to share between threads and processes."""

    def __init__(self, path: str | Path, limits: Limits, busy_timeout_s: float = 2.0) -> None:
        self.path = str(path)
        self._limits = limits
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._next_purge = -math.inf
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                       check_same_thread=False)
            for pragma in PRAGMAS:
                self._db.execute(pragma)
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path!r}: {exc}") from exc

    @classmethod
    def from_url(cls, url: str, limits: Limits) -> SqliteStore:
        return cls(path_from_url(url), limits)

    def _atomic(self, now: float, step: Callable[[_SqliteState], T]) -> T:
        # Threads of this process queue on the lock, processes on SQLite's write lock; each
        # wait is bounded by the busy timeout, so a decision waits at most twice that and
        # then becomes the gate's store_unavailable answer.
        if not self._lock.acquire(timeout=self._busy_timeout_s):
            raise StoreError(f"SQLite store {self.path!r} is busy: this process's other "
                             f"threads held it for over {self._busy_timeout_s:g} s")
        try:
            return self._step(now, step)
        finally:
            self._lock.release()

    def _step(self, now: float, step: Callable[[_SqliteState], T]) -> T:
        """One primitive as one BEGIN IMMEDIATE transaction (the caller holds the lock)."""
        purge_due = now >= self._next_purge
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path!r} is unavailable: {exc}") from exc
        try:
            st = _SqliteState(self._db, self._limits, purge_due)
            result = step(st)
            st.flush()
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"SQLite store {self.path!r} failed: {exc}") from exc
        except BaseException:
            self._rollback()
            raise
        if purge_due:
            self._next_purge = now + 1.0
        return result

    def _rollback(self) -> None:
        # If ROLLBACK fails the transaction is already gone and nothing was written.
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def configure(self, limits: Limits) -> None:
        with self._lock:
            self._limits = limits

    def acquire(self, claim: Claim, now: float) -> Verdict:
        def step(st: _SqliteState) -> Verdict:
            st.prefetch(sorted(claim.scopes()))
            return kernel.acquire(st, claim, now)

        return self._atomic(now, step)

    def renew(
        self, account: str | None, call_id: str, ttl_s: float | None, now: float
    ) -> RenewOutcome:
        return self._atomic(now, lambda st: kernel.renew(st, account, call_id, ttl_s, now))

    def release(self, account: str | None, call_id: str, now: float) -> tuple[bool, bool]:
        return self._atomic(now, lambda st: kernel.release(st, account, call_id, now))

    def tombstone(self, record: Record) -> None:
        def step(st: _SqliteState) -> None:
            if st.get(record.account, record.call_id) is None:
                st.put(record)

        self._atomic(-math.inf, step)  # no purge here: record.until is in the future

    def cooldown(self, provider: str, alias: str, until: float) -> None:
        self._atomic(-math.inf, lambda st: st.db.execute(
            "INSERT OR REPLACE INTO cooldowns (provider, alias, until) VALUES (?, ?, ?)",
            (provider, alias, until)))

    def clear_disabled(self, now: float) -> None:
        def step(st: _SqliteState) -> None:
            st.db.execute("DELETE FROM cooldowns WHERE until = ? OR until <= ?", (math.inf, now))
            kernel.promote(st, now)

        self._atomic(now, step)

    def expire(self, now: float) -> int:
        return self._atomic(now, lambda st: kernel.expire(st, now))

    def usage(self, now: float) -> UsageSnapshot:
        def step(st: _SqliteState) -> UsageSnapshot:
            kernel.expire(st, now)
            st.flush()
            db = st.db
            in_use = dict(db.execute("SELECT key, in_use FROM slots").fetchall())
            cooldowns = [(f"{p}:{a}", u) for p, a, u in
                         db.execute("SELECT provider, alias, until FROM cooldowns")]
            queue = [load_record(row[0]) for row in
                     db.execute("SELECT body FROM calls WHERE state = 'queued'")]
            leases = db.execute("SELECT count(*) FROM calls WHERE state = 'leased'").fetchone()
            return kernel.usage(st, now, in_use, cooldowns, queue, int(leases[0]))

        return self._atomic(now, step)

    def ping(self) -> None:
        with self._lock:
            try:
                self._db.execute("SELECT 1 FROM meta LIMIT 1").fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite store {self.path!r} is unreachable: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()
