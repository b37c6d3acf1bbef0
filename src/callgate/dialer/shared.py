"""What the gate and the dialler share through a campaign's state file (SQLite, WAL).

The gate (an HTTP process, perhaps several) and ``callgate dial`` (another process) never
hold anything of each other in memory: they meet in the campaign's state file, like two
clerks who never speak but share one ledger book, each writing only in their own columns.

- The gate *appends facts* it learns from the provider and the agent to ``call_events``
  (``answered``: the callee picked up, ``/twilio/outbound``; ``agent``: the agent's media
  stream connected or its first renew arrived; ``status``: the provider's final
  ``CallStatus``, with ``AnsweredBy``), and numbers that asked not to be called again to
  ``optouts``. It never writes the dialler's tables and judges nothing.
- The dialler *reads* those facts and decides what they mean (a result, an abandonment,
  a pause: :mod:`callgate.dialer.pacing`), and writes ``progress``, one row with its live
  view, which the gate's read-only ``GET /v1/campaigns`` shows.

A call id names its campaign (``<campaign>:<row>:<try>[~<run>]``, and a campaign's name
has no ``:``), so the gate finds the file a webhook belongs to from the call id alone.
SQLite's WAL lets one writer and many readers share the file across processes; each
gate-side operation opens, uses and closes its own connection (requests run on threads).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SHARED_SCHEMA = """
CREATE TABLE IF NOT EXISTS call_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT NOT NULL, kind TEXT NOT NULL,
    at REAL NOT NULL, status TEXT, answered_by TEXT, provider_id TEXT);
CREATE INDEX IF NOT EXISTS call_events_call ON call_events (call_id);
CREATE TABLE IF NOT EXISTS optouts (phone TEXT PRIMARY KEY, at REAL NOT NULL, call_id TEXT);
CREATE TABLE IF NOT EXISTS progress (
    id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL, document TEXT NOT NULL);
"""
EVENT_KINDS = ("answered", "agent", "status")


def campaign_of(call_id: str) -> str:
    """The campaign a dialler's call id belongs to ('' for any other id)."""
    name, sep, rest = call_id.partition(":")
    return name if sep and rest else ""


class StateFile:
    """The gate's handle on one campaign's state file (created empty when missing, so the
    gate may start before the dialler; ``callgate dial --state`` then binds it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            with self._connect() as db:
                db.executescript(SHARED_SCHEMA)
        except sqlite3.Error as exc:
            raise sqlite3.OperationalError(f"{self.path!r}: {exc}") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
        finally:
            db.close()

    def meta(self) -> dict[str, str]:
        with self._connect() as db:
            try:
                return dict(db.execute("SELECT key, value FROM meta").fetchall())
            except sqlite3.OperationalError:  # the dialler has not bound it yet
                return {}

    def record(self, call_id: str, kind: str, at: float, *, status: str | None = None,
               answered_by: str | None = None, provider_id: str | None = None) -> None:
        """Append one fact about ``call_id`` (see the module docstring); only the first
        ``answered`` and ``agent`` count (an agent renews its lease all call long)."""
        once = "" if kind == "status" else \
            " WHERE NOT EXISTS (SELECT 1 FROM call_events WHERE call_id = ? AND kind = ?)"
        extra = () if kind == "status" else (call_id, kind)
        with self._connect() as db:
            db.execute("INSERT INTO call_events (call_id, kind, at, status, answered_by, "
                       "provider_id) SELECT ?, ?, ?, ?, ?, ?" + once,
                       (call_id, kind, at, status, answered_by, provider_id, *extra))

    def phone_of(self, call_id: str) -> str | None:
        """The number the dialler called under ``call_id`` (None when it has no such try)."""
        with self._connect() as db:
            try:
                row = db.execute("SELECT c.phone FROM tries t JOIN contacts c ON c.row = t.row "
                                 "WHERE t.call_id = ?", (call_id,)).fetchone()
            except sqlite3.OperationalError:
                return None
        return None if row is None else str(row[0])

    def opt_out(self, phone: str, at: float, call_id: str | None) -> bool:
        """Add ``phone`` to the campaign's do-not-call list; False when it was already on it."""
        with self._connect() as db:
            cursor = db.execute("INSERT OR IGNORE INTO optouts VALUES (?, ?, ?)",
                                (phone, at, call_id))
            return cursor.rowcount > 0

    def progress(self) -> dict[str, Any] | None:
        """The campaign's progress as the dialler's view shows it, or None when unbound."""
        meta = self.meta()
        if "campaign" not in meta:
            return None
        with self._connect() as db:
            statuses = {"pending": 0, "placed": 0, "unknown": 0, "skipped": 0}
            statuses.update(db.execute(
                "SELECT status, COUNT(*) FROM contacts GROUP BY status").fetchall())
            results = dict(db.execute("SELECT state, COUNT(*) FROM tries GROUP BY state")
                           .fetchall())
            optouts = db.execute("SELECT COUNT(*) FROM optouts").fetchone()[0]
            snapshot = db.execute("SELECT at, document FROM progress WHERE id = 1").fetchone()
        live: dict[str, Any] = json.loads(snapshot[1]) if snapshot else {}
        return {
            "name": meta["campaign"], "account": meta.get("account"),
            "runs": int(meta.get("runs", "0")),
            "contacts": sum(statuses.values()), **statuses,
            "tries_by_result": results, "opted_out": optouts,
            "paused": meta.get("paused") or None,
            "abandonment": live.get("abandonment"),
            "in_call": live.get("in_call", 0), "waiting_window": live.get("waiting_window", 0),
            "outside_hours": live.get("outside_hours", 0),
            "per_number_last_hour": live.get("per_number_last_hour", {}),
            "holding": live.get("holding"), "eta_s": live.get("eta_s"),
            "running": bool(live.get("running")),
            "updated_at": snapshot[0] if snapshot else None,
        }


def write_progress(db: sqlite3.Connection, at: float, document: dict[str, Any]) -> None:
    """The dialler's side: replace the live snapshot the gate shows."""
    db.execute("INSERT OR REPLACE INTO progress VALUES (1, ?, ?)", (at, json.dumps(document)))
