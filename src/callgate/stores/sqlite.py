"""The SQLite store: one file, WAL, one ``BEGIN IMMEDIATE`` transaction per primitive.

The default for ``callgate serve``. Leases and queue entries live in the file, so they
survive a restart, and several gate processes on one host can share it: SQLite's write
lock makes each primitive atomic across processes. A writer that cannot get the lock
within the busy timeout gets :class:`~callgate.errors.StoreError`, which the gate turns
into the configured ``on_store_error`` decision.

A primitive costs few statements. Right after ``BEGIN IMMEDIATE`` one query reads what
the step will need: the earliest lease expiry (so housekeeping skips its queries when
nothing is due), whether any call is queued or any key cooling, the slot counts and
window counts of the claim, and the call's own record. Slot counts change by deltas
written once at the end of the step. Everything read is read under the write lock, and
nothing outlives the transaction: several processes share the file safely.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from callgate.errors import StoreError
from callgate.stores import kernel
from callgate.stores.base import Claim, Limits, Record, RenewOutcome, UsageSnapshot, Verdict
from callgate.stores.codec import (
    LEASED,
    QUEUED,
    REJECTED,
    STATE_CODE,
    decode_record,
    encode_record,
)

T = TypeVar("T")

SCHEMA_VERSION = 3
"""Bumped whenever the tables change; a file of another version is refused, not guessed at."""

SCHEMA = (
    # A call's record is the one codec's (stores/codec.py), the bytes Redis keeps too; the
    # columns beside it are what the queries below select and order by, each set only in
    # the states that use it (0 or '' otherwise): state (0 leased, 1 queued, 2 rejected,
    # 3 ended), a lease's expiry, a rejection's or end's until, a queued call's number,
    # priority, sequence, deadline and last poll. Each row is in one of the partial
    # indexes below, so writing a record touches two b-trees.
    "CREATE TABLE calls (call_id TEXT NOT NULL, account TEXT NOT NULL, state INTEGER NOT NULL, "
    "expires_at REAL NOT NULL, until REAL NOT NULL, queue TEXT NOT NULL, "
    "priority INTEGER NOT NULL, seq INTEGER NOT NULL, deadline REAL NOT NULL, "
    "last_poll REAL NOT NULL, record BLOB NOT NULL, PRIMARY KEY (call_id, account)) "
    "WITHOUT ROWID",
    "CREATE INDEX calls_expiry ON calls (expires_at) WHERE state = 0",
    "CREATE INDEX calls_until ON calls (until) WHERE state >= 2",
    "CREATE INDEX calls_queue ON calls (queue, priority DESC, seq) WHERE state = 1",
    "CREATE TABLE slots (key TEXT PRIMARY KEY, in_use INTEGER NOT NULL) WITHOUT ROWID",
    # n admissions under key at the same instant; gone_at: when the longest window drops them
    "CREATE TABLE events (key TEXT NOT NULL, at REAL NOT NULL, n INTEGER NOT NULL, "
    "gone_at REAL NOT NULL, PRIMARY KEY (key, at)) WITHOUT ROWID",
    "CREATE INDEX events_gone ON events (gone_at)",
    "CREATE TABLE cooldowns (provider TEXT NOT NULL, alias TEXT NOT NULL, until REAL NOT NULL, "
    "PRIMARY KEY (provider, alias)) WITHOUT ROWID",
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    f"INSERT INTO meta (name, value) VALUES ('schema', {SCHEMA_VERSION}), ('seq', 0)",
)

PAGE_SIZE = 1024
"""Bytes per page of a new file. A commit writes every page it changed to the WAL, and a
decision changes a few small rows in four or five b-trees: small pages make commits cheap."""

WAL_BYTES = 4 * 1024 * 1024
"""Checkpoint when the WAL holds this much: about SQLite's default (1000 pages of 4 KiB),
whatever the page size, so that small pages do not mean more checkpoints (and syncs)."""

PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=OFF")

_SELECT = "SELECT call_id, account, state, until, queue, expires_at, record FROM calls"
_STATE, _UNTIL, _QUEUE = 2, 3, 4  # in a row of _SELECT
_BY_ID = f"{_SELECT} WHERE call_id = ?"  # every account's record of the id: see _best
_BY_IDENT = f"{_SELECT} WHERE call_id = ? AND account = ?"
_PUT = ("INSERT OR REPLACE INTO calls (call_id, account, state, expires_at, until, queue, "
        "priority, seq, deadline, last_poll, record) VALUES (?,?,?,?,?,?,?,?,?,?,?)")
_ADD = ("INSERT INTO slots (key, in_use) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET in_use = in_use + excluded.in_use")
_LOG = ("INSERT INTO events (key, at, n, gone_at) VALUES (?, ?, 1, ?) ON CONFLICT (key, at) "
        "DO UPDATE SET n = n + 1, gone_at = max(gone_at, excluded.gone_at)")
_HEAD = 3  # the preload row starts with: earliest lease expiry, anything queued, cooling
_preloads: dict[tuple[int, int, int], str] = {}


def _preload_sql(keys: int, windows: int, record: int) -> str:
    """The one query a step starts with (``record``: 0 none, 1 by call id, 2 by account too)."""
    shape = (keys, windows, record)
    sql = _preloads.get(shape)
    if sql is None:
        parts = ["(SELECT min(expires_at) FROM calls WHERE state = 0)",
                 "EXISTS (SELECT 1 FROM calls WHERE state = 1)",
                 "EXISTS (SELECT 1 FROM cooldowns)"]
        parts += ["ifnull((SELECT in_use FROM slots WHERE key = ?), 0)"] * keys
        parts += ["(SELECT total(n) FROM events WHERE key = ? AND at > ?)"] * windows
        sql = "SELECT " + ", ".join(parts)
        if record:
            found = _BY_ID if record == 1 else _BY_IDENT
            sql = (f"SELECT one.*, c.* FROM ({sql}) AS one LEFT JOIN ({found}) AS c ON 1")
        _preloads[shape] = sql
    return sql


def _row(r: Record) -> tuple[Any, ...]:
    """What :data:`_PUT` writes for ``r``: its record and the columns the queries read."""
    state = STATE_CODE[r.state]
    if state == QUEUED:
        queue: tuple[Any, ...] = (r.number, r.priority, r.seq, r.deadline, r.last_poll)
    else:
        queue = ("", 0, 0, 0.0, 0.0)
    return (r.call_id, r.account, state, r.expires_at if state == LEASED else 0.0, r.until,
            *queue, encode_record(r))


def path_from_url(url: str) -> str:
    """``sqlite:///callgate.db`` -> ``callgate.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r}; expected sqlite:///path/to/file.db")
    return url.removeprefix("sqlite:///")


class _SqliteState:
    """:class:`kernel.State` over one open transaction.

    Records read are kept by identity for the transaction (as the memory store keeps
    them), slot changes are kept as deltas and written by :meth:`flush`.
    """

    def __init__(self, db: sqlite3.Connection, limits: Limits, purge_due: bool,
                 now: float = -math.inf) -> None:
        self.db = db
        self.limits = limits
        self.purge_due = purge_due
        self.now = now  # tombstones with until <= now are gone (purged or not)
        self.base: dict[str, int] = {}
        self.delta: dict[str, int] = {}
        self.records: dict[tuple[str, str], Record | None] = {}
        self.best: dict[str, Record | None] = {}  # get(None, call_id), until a put of call_id
        self.counts: dict[tuple[str, float], int] = {}
        # From the preload, kept conservative by put(); None: not known, ask the database.
        self.lease_min: float | None = None
        self.queued: bool | None = None
        self._cooldowns: dict[tuple[str, str], float] | None = None

    def preload(self, account: str | None, call_id: str | None, keys: Sequence[str],
                windows: Sequence[tuple[str, float]]) -> None:
        """Read in one query what this step needs first (see the module docstring)."""
        kind = 0 if call_id is None else 1 if account is None else 2
        params: list[Any] = list(keys)
        for window in windows:
            params += window
        if call_id is not None:
            params.append(call_id)
            if account is not None:
                params.append(account)
        cursor = self.db.execute(_preload_sql(len(keys), len(windows), kind), params)
        row = cursor.fetchone()
        self.lease_min = math.inf if row[0] is None else row[0]
        self.queued = bool(row[1])
        if not row[2]:
            self._cooldowns = {}
        at = _HEAD + len(keys)
        self.base.update(zip(keys, row[_HEAD:at], strict=True))
        for window in windows:
            self.counts[window] = int(row[at])
            at += 1
        if call_id is None:
            return
        if account is None:
            # one row per account holding the id (the record columns all NULL if none)
            rows = [row, *cursor.fetchall()]
            found = [r[at:] for r in rows if r[at] is not None]
            record = self.best[call_id] = self._best(found)
        else:
            found = row[at:]
            record = self._load(found) if found[0] is not None and self._here(found) else None
            if record is None:
                self.records[(account, call_id)] = None
        if record is not None and record.claim is not None:
            self.prefetch(record.claim.scopes())

    def _here(self, row: Sequence[Any]) -> bool:
        """False for a tombstone past its time, which is deleted now: the (throttled) purge
        may not have run in this step, and a lookup must find what memory and Redis find."""
        if row[_STATE] < REJECTED or row[_UNTIL] > self.now:
            return True
        self.db.execute("DELETE FROM calls WHERE call_id = ? AND account = ?", (row[0], row[1]))
        return False

    def _best(self, rows: list[Sequence[Any]]) -> Record | None:
        """Of one call id's records in several accounts, the one a lookup without an account
        finds (base.py, rule 1): a live lease or queue entry first, then the first account
        in config order; accounts no longer in the stack are not searched."""
        order = {name: i for i, name in enumerate(self.limits.accounts)}
        found = [r for r in rows if r[1] in order and self._here(r)]
        if not found:
            return None
        return self._load(min(found, key=lambda r: (r[_STATE] >= REJECTED, order[r[1]])))

    def _load(self, row: Sequence[Any]) -> Record:
        ident = (row[1], row[0])
        record = self.records.get(ident)
        if record is None:
            record = self.records[ident] = decode_record(row[1], row[0], row[6], row[5])
        return record

    def prefetch(self, keys: Sequence[str]) -> None:
        missing = [k for k in keys if k not in self.base]
        if missing:
            marks = ",".join("?" * len(missing))
            rows = self.db.execute(f"SELECT key, in_use FROM slots WHERE key IN ({marks})",
                                   missing).fetchall()
            self.base.update({key: 0 for key in missing})
            self.base.update(dict(rows))

    def flush(self) -> None:
        changes = [(key, delta) for key, delta in self.delta.items() if delta]
        if changes:
            self.db.executemany(_ADD, changes)
            for key, delta in changes:
                if key in self.base:
                    self.base[key] += delta
        self.delta.clear()

    def get(self, account: str | None, call_id: str) -> Record | None:
        if account is None:
            if call_id in self.best:
                return self.best[call_id]
            rows = self.db.execute(_BY_ID, (call_id,)).fetchall()
            record = self.best[call_id] = self._best(rows)
        else:
            ident = (account, call_id)
            if ident in self.records:
                return self.records[ident]
            row = self.db.execute(_BY_IDENT, (call_id, account)).fetchone()
            if row is None or not self._here(row):
                self.records[ident] = None
                return None
            record = self._load(row)
        if record is not None and record.claim is not None:
            self.prefetch(record.claim.scopes())
        return record

    def put(self, record: Record) -> None:
        self.records[(record.account, record.call_id)] = record
        self.best.pop(record.call_id, None)
        if record.state == "leased" and self.lease_min is not None:
            self.lease_min = min(self.lease_min, record.expires_at)
        elif record.state == "queued" and self.queued is not None:
            self.queued = True
        self.db.execute(_PUT, _row(record))

    def in_use(self, key: str) -> int:
        base = self.base.get(key)
        if base is None:
            self.prefetch([key])
            base = self.base[key]
        return base + self.delta.get(key, 0)

    def add(self, key: str, delta: int) -> None:
        self.delta[key] = self.delta.get(key, 0) + delta

    def count_since(self, key: str, since: float) -> int:
        count = self.counts.get((key, since))
        if count is None:
            row = self.db.execute("SELECT total(n) FROM events WHERE key = ? AND at > ?",
                                  (key, since)).fetchone()
            count = self.counts[(key, since)] = int(row[0])
        return count

    def nth_since(self, key: str, since: float, n: int) -> float:
        rows = self.db.execute("SELECT at, n FROM events WHERE key = ? AND at > ? ORDER BY at",
                               (key, since))
        for at, count in rows:
            if n < count:
                return float(at)
            n -= count
        raise IndexError(f"window {key!r} has fewer than {n + 1} events after {since}")

    def log_event(self, key: str, at: float) -> None:
        spec = self.limits.windows.get(key)
        if spec is None:  # never so: the kernel logs only the stack's windows
            return
        self.db.execute(_LOG, (key, at, at + spec[1]))
        for counted in [c for c in self.counts if c[0] == key]:
            del self.counts[counted]

    def cooldown_until(self, provider: str, alias: str) -> float | None:
        if self._cooldowns is None:
            rows = self.db.execute("SELECT provider, alias, until FROM cooldowns").fetchall()
            self._cooldowns = {(p, a): u for p, a, u in rows}
        return self._cooldowns.get((provider, alias))

    def due_leases(self, now: float) -> list[Record]:
        if self.lease_min is not None and self.lease_min > now:
            return []
        rows = self.db.execute(f"{_SELECT} WHERE state = 0 AND expires_at <= ?", (now,))
        return [self._load(row) for row in rows.fetchall()]

    def due_queued(self, now: float) -> list[Record]:
        if self.queued is False:
            return []
        rows = self.db.execute(
            f"{_SELECT} WHERE state = 1 AND (deadline <= ? OR last_poll <= ?)",
            (now, now - self.limits.poll_timeout_s),
        )
        return [self._load(row) for row in rows.fetchall()]

    def purge(self, now: float) -> None:
        if self.purge_due:
            db = self.db
            db.execute("DELETE FROM calls WHERE state >= 2 AND until <= ?", (now,))
            db.execute("DELETE FROM events WHERE gone_at <= ?", (now,))
            # A cooldown over is the same as none (every reader compares it with now).
            db.execute("DELETE FROM cooldowns WHERE until <= ?", (now,))
            if self._cooldowns:
                self._cooldowns = {k: u for k, u in self._cooldowns.items() if u > now}

    def queue_heads(self) -> list[Record]:
        if self.queued is False:
            return []
        rows = self.db.execute(f"{_SELECT} WHERE state = 1 ORDER BY queue, priority DESC, seq")
        heads: dict[str, Sequence[Any]] = {}
        for row in rows.fetchall():
            heads.setdefault(row[_QUEUE], row)
        records = [self._load(row) for row in heads.values()]
        self.prefetch(sorted({key for r in records if r.claim for key in r.claim.scopes()}))
        return records

    def any_queued(self) -> bool:
        if self.queued is None:
            row = self.db.execute("SELECT EXISTS (SELECT 1 FROM calls WHERE state = 1)")
            self.queued = bool(row.fetchone()[0])
        return self.queued

    def queue_of(self, number: str) -> list[Record]:
        if self.queued is False:
            return []
        rows = self.db.execute(
            f"{_SELECT} WHERE state = 1 AND queue = ? ORDER BY priority DESC, seq", (number,))
        return [self._load(row) for row in rows.fetchall()]

    def next_seq(self) -> int:
        row = self.db.execute(
            "UPDATE meta SET value = value + 1 WHERE name = 'seq' RETURNING value"
        ).fetchone()
        return int(row[0])


class SqliteStore:
    """A store in one SQLite file; safe to share between threads and processes."""

    does_io = True

    def __init__(self, path: str | Path, limits: Limits, busy_timeout_s: float = 2.0) -> None:
        self.path = str(path)
        self._limits = limits
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._next_purge = -math.inf
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                       check_same_thread=False)
            # before WAL mode, which fixes the page size of a new file (an old file keeps its own)
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            for pragma in PRAGMAS:
                self._db.execute(pragma)
            page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_BYTES // page_size}")
            self._create()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path!r}: {exc}") from exc

    def _create(self) -> None:
        """Create the tables in a new file; refuse a file of another schema version."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")  # two processes opening one new file: one creates
        try:
            tables = {row[0] for row in
                      db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                for statement in SCHEMA:
                    db.execute(statement)
                version: int | None = SCHEMA_VERSION
            elif "meta" in tables:
                row = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
                version = None if row is None else int(row[0])
            else:
                version = None
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        if version != SCHEMA_VERSION:
            if version is not None:
                found = f"schema {version}"
            elif "calls" in tables:
                found = "schema 1 (an older callgate's)"
            else:
                found = "no callgate tables"
            db.close()
            raise StoreError(
                f"SQLite store {self.path!r} has {found}; this callgate needs schema "
                f"{SCHEMA_VERSION}. The file was written by another callgate version (or is "
                "not callgate's): point the store at a new file, or move this one away "
                "(its leases and queue are not migrated)")

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
            st = _SqliteState(self._db, self._limits, purge_due, now)
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
            windows = st.limits.windows
            st.preload(claim.account, claim.call_id, claim.scopes(),
                       [(key, now - windows[key][1]) for key in claim.windows if key in windows])
            return kernel.acquire(st, claim, now)

        return self._atomic(now, step)

    def renew(
        self, account: str | None, call_id: str, ttl_s: float | None, now: float
    ) -> RenewOutcome:
        def step(st: _SqliteState) -> RenewOutcome:
            st.preload(account, call_id, (), ())
            return kernel.renew(st, account, call_id, ttl_s, now)

        return self._atomic(now, step)

    def release(self, account: str | None, call_id: str, now: float) -> tuple[bool, bool]:
        def step(st: _SqliteState) -> tuple[bool, bool]:
            st.preload(account, call_id, (), ())
            return kernel.release(st, account, call_id, now)

        return self._atomic(now, step)

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
        def step(st: _SqliteState) -> int:
            st.preload(None, None, (), ())
            return kernel.expire(st, now)

        return self._atomic(now, step)

    def usage(self, now: float) -> UsageSnapshot:
        def step(st: _SqliteState) -> UsageSnapshot:
            kernel.expire(st, now)
            st.flush()
            db = st.db
            in_use = dict(db.execute("SELECT key, in_use FROM slots").fetchall())
            cooldowns = [(f"{p}:{a}", u) for p, a, u in
                         db.execute("SELECT provider, alias, until FROM cooldowns")]
            queue = [st._load(row) for row in
                     db.execute(f"{_SELECT} WHERE state = 1").fetchall()]
            leases = db.execute("SELECT count(*) FROM calls WHERE state = 0").fetchone()
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
