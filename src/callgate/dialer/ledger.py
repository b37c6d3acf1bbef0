"""The campaign's own state: who is pending, every try, at most once across crashes.

A paper ledger by the phone: before dialling, the caller writes "calling row 17, try 2,
from +1415..." and only then dials; after the call they write down how it went. If they
faint mid-call, whoever takes over sees a line with no outcome and does not call row 17
again: they cannot know whether the phone rang, so they write "unknown". This module is
that ledger, in SQLite (WAL): :meth:`Ledger.begin_try` commits a ``placing`` row before
the placer is asked, :meth:`Ledger.finish_try` commits the result after, and
:meth:`Ledger.recover` (run at every start) turns each ``placing`` left by a crash into
``unknown`` and closes its contact. A contact ends ``placed`` (a try got a result),
``unknown`` or ``skipped`` (with its reason), never anything else.

Each start is a new *run*: call ids of run 1 are ``<campaign>:<row>:<try>``, later runs add
``~<run>`` so an id that a crashed run acquired (and perhaps never placed) is never reused
with the gate, whose ids are idempotent.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callgate.dialer.campaign import Campaign
from callgate.dialer.shared import SHARED_SCHEMA, write_progress
from callgate.errors import CallgateError

SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contacts (
    row INTEGER PRIMARY KEY, phone TEXT NOT NULL, status TEXT NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0, next_at REAL, reason TEXT);
CREATE TABLE IF NOT EXISTS tries (
    call_id TEXT PRIMARY KEY, row INTEGER NOT NULL, try INTEGER NOT NULL,
    caller_id TEXT NOT NULL, state TEXT NOT NULL, placed_at REAL NOT NULL,
    ended_at REAL, reason TEXT);
CREATE INDEX IF NOT EXISTS tries_state ON tries (state);
"""


class LedgerError(CallgateError):
    """The state file cannot be used for this campaign (another campaign's, or unreadable)."""


@dataclass(frozen=True)
class PendingContact:
    row: int
    tries: int
    next_at: float | None


@dataclass(frozen=True)
class TryRecord:
    call_id: str
    row: int
    try_no: int
    caller_id: str
    state: str
    placed_at: float
    ended_at: float | None
    reason: str | None


class Ledger:
    """A campaign's state file (``:memory:`` for a simulation that keeps nothing)."""

    def __init__(self, path: str | Path, *, durable: bool = True) -> None:
        self.path = str(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                # FULL: a committed 'placing' survives a power cut, not only a kill -9.
                self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.executescript(_SCHEMA + SHARED_SCHEMA)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the state file {self.path!r}: {exc}") from None
        self.run = 0

    def close(self) -> None:
        self._db.close()

    # starting ---------------------------------------------------------------------------
    def start(self, campaign: Campaign) -> None:
        """Bind the file to ``campaign`` (first start) or check it is the same campaign.

        Refuses a file written for another campaign or another contact list: resuming
        against edited rows could call someone twice or skip someone silently.
        """
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        digest = campaign.digest()
        if not meta:
            with self._tx():
                self._db.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("schema", SCHEMA_VERSION), ("campaign", campaign.name),
                    ("digest", digest), ("runs", "1"), ("account", campaign.spec.account),
                    ("voicemail", campaign.spec.voicemail)])
                self._db.executemany(
                    "INSERT INTO contacts (row, phone, status, reason) VALUES (?, ?, ?, ?)",
                    [(c.row, c.phone, "skipped" if c.skip else "pending", c.skip)
                     for c in campaign.contacts])
            self.run = 1
            return
        if meta.get("schema") != SCHEMA_VERSION:
            raise LedgerError(f"{self.path}: state file schema {meta.get('schema')!r}, this "
                              f"callgate writes {SCHEMA_VERSION!r}; use a new --state file")
        if meta.get("campaign") != campaign.name or meta.get("digest") != digest:
            raise LedgerError(
                f"{self.path}: this state file belongs to campaign {meta.get('campaign')!r} "
                "with a different contact list; resuming against other rows could call "
                "someone twice. Restore that list, or start over with a new --state file")
        self.run = int(meta["runs"]) + 1
        with self._tx():
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'runs'", (str(self.run),))
        self.set_meta("account", campaign.spec.account)
        self.set_meta("voicemail", campaign.spec.voicemail)

    def call_id(self, campaign: str, row: int, try_no: int) -> str:
        """The gate's call id for a try in this run (see the module docstring)."""
        base = f"{campaign}:{row}:{try_no}"
        return base if self.run <= 1 else f"{base}~{self.run}"

    def recover(self, now: float) -> list[TryRecord]:
        """Every try a crash left ``placing``: now ``unknown``, its contact closed ``unknown``."""
        left = [TryRecord(*row) for row in self._db.execute(
            "SELECT call_id, row, try, caller_id, state, placed_at, ended_at, reason "
            "FROM tries WHERE state = 'placing'")]
        if left:
            reason = "the dialler stopped while placing it; never placed again"
            with self._tx():
                self._db.executemany(
                    "UPDATE tries SET state = 'unknown', ended_at = ?, reason = ? "
                    "WHERE call_id = ?", [(now, reason, t.call_id) for t in left])
                self._db.executemany(
                    "UPDATE contacts SET status = 'unknown', next_at = NULL, reason = ? "
                    "WHERE row = ?", [(reason, t.row) for t in left])
        return [TryRecord(t.call_id, t.row, t.try_no, t.caller_id, "unknown", t.placed_at,
                          now, "the dialler stopped while placing it; never placed again")
                for t in left]

    # the tries ------------------------------------------------------------------------------
    def pending(self) -> list[PendingContact]:
        return [PendingContact(*row) for row in self._db.execute(
            "SELECT row, tries, next_at FROM contacts WHERE status = 'pending' ORDER BY row")]

    def begin_try(self, row: int, try_no: int, call_id: str, caller_id: str, at: float) -> None:
        """Commit ``placing`` for this try: from here on it is never placed again."""
        with self._tx():
            self._db.execute("INSERT INTO tries VALUES (?, ?, ?, ?, 'placing', ?, NULL, NULL)",
                             (call_id, row, try_no, caller_id, at))
            self._db.execute("UPDATE contacts SET tries = ? WHERE row = ?", (try_no, row))

    def finish_try(self, call_id: str, row: int, result: str, reason: str,
                   ended_at: float | None, next_at: float | None, *,
                   unknown: bool = False) -> None:
        """Commit the try's result; ``next_at`` None closes the contact ``placed`` (or
        ``unknown`` when nobody can tell whether the call went out)."""
        with self._tx():
            self._db.execute("UPDATE tries SET state = ?, ended_at = ?, reason = ? "
                             "WHERE call_id = ?", (result, ended_at, reason, call_id))
            if unknown:
                self._db.execute("UPDATE contacts SET status = 'unknown', next_at = NULL, "
                                 "reason = ? WHERE row = ?", (reason, row))
            elif next_at is None:
                self._db.execute("UPDATE contacts SET status = 'placed', next_at = NULL, "
                                 "reason = ? WHERE row = ?", (result, row))
            else:
                self._db.execute("UPDATE contacts SET next_at = ? WHERE row = ?",
                                 (next_at, row))

    def mark_sent(self, call_id: str, provider_id: str) -> None:
        """The provider took the call (``ringing``): its result comes through the gate."""
        with self._tx():
            self._db.execute("UPDATE tries SET state = 'ringing', reason = ? WHERE call_id = ?",
                             (provider_id, call_id))

    def ringing(self) -> list[TryRecord]:
        """Tries the provider took whose result has not come back yet (across runs)."""
        return [TryRecord(*row) for row in self._db.execute(
            "SELECT call_id, row, try, caller_id, state, placed_at, ended_at, reason "
            "FROM tries WHERE state = 'ringing' ORDER BY placed_at")]

    # what the gate wrote (callgate.dialer.shared) -------------------------------------------
    def call_events(self, after: int) -> list[tuple[int, str, str, float, str | None,
                                                    str | None]]:
        """(id, call_id, kind, at, status, answered_by) of every fact newer than ``after``."""
        return list(self._db.execute(
            "SELECT id, call_id, kind, at, status, answered_by FROM call_events WHERE id > ? "
            "ORDER BY id", (after,)))

    def optouts(self) -> set[str]:
        return {str(row[0]) for row in self._db.execute("SELECT phone FROM optouts")}

    def skip(self, row: int, reason: str) -> None:
        """Close a pending contact ``skipped`` (an opt-out arrived before its next try)."""
        with self._tx():
            self._db.execute("UPDATE contacts SET status = 'skipped', next_at = NULL, "
                             "reason = ? WHERE row = ? AND status = 'pending'", (reason, row))

    def answered_tries(self, since: float) -> list[tuple[float, bool]]:
        """(placed_at, abandoned) of every try a person answered, placed since ``since``."""
        return [(float(at), state == "abandoned") for at, state in self._db.execute(
            "SELECT placed_at, state FROM tries WHERE state IN ('answered', 'abandoned') "
            "AND placed_at >= ?", (since,))]

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        with self._tx():
            if value is None:
                self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def write_progress(self, at: float, document: dict[str, Any]) -> None:
        with self._tx():
            write_progress(self._db, at, document)

    # reading --------------------------------------------------------------------------------
    def statuses(self) -> dict[str, int]:
        """Contacts per status: pending, placed, unknown, skipped."""
        counts = {"pending": 0, "placed": 0, "unknown": 0, "skipped": 0}
        for status, count in self._db.execute(
                "SELECT status, COUNT(*) FROM contacts GROUP BY status"):
            counts[status] = count
        return counts

    def skip_reasons(self) -> dict[str, int]:
        return dict(self._db.execute(
            "SELECT reason, COUNT(*) FROM contacts WHERE status = 'skipped' GROUP BY reason"
        ).fetchall())

    def results(self) -> dict[str, int]:
        """Tries per result (``placing`` only while a try is in the placer's hands)."""
        return dict(self._db.execute(
            "SELECT state, COUNT(*) FROM tries GROUP BY state").fetchall())

    def tries(self) -> list[TryRecord]:
        return [TryRecord(*row) for row in self._db.execute(
            "SELECT call_id, row, try, caller_id, state, placed_at, ended_at, reason "
            "FROM tries ORDER BY placed_at, call_id")]

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
