"""The SQLite store's own concerns: its rows, its schema version, shared files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from tests.conftest import stack_from
from tests.gate.stacks import BASE, N1, N2

from callgate.errors import StoreError
from callgate.gate import Gate
from callgate.model import Call, Outcome, Reason
from callgate.stores import SqliteStore
from callgate.stores.codec import decode_record, encode_record
from callgate.stores.sqlite import SCHEMA_VERSION
from callgate.testing import FakeClock


def _old_file(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE calls (account TEXT, call_id TEXT, body TEXT);"
                     "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
                     "INSERT INTO meta VALUES ('seq', 7);")
    db.close()


def test_a_file_of_an_older_schema_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    """Opening an older callgate's file raises StoreError naming the file and both versions."""
    path = tmp_path / "old.db"
    _old_file(path)
    stack = stack_from(BASE)
    with pytest.raises(StoreError, match=rf"old\.db.*schema 1.*needs schema {SCHEMA_VERSION}"):
        SqliteStore(path, Gate.limits_for(stack))


def test_a_sqlite_file_that_is_not_callgates_is_left_alone(tmp_path: Path) -> None:
    """A database of another application is refused, and not written to."""
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (text TEXT)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="no callgate tables"):
        SqliteStore(path, Gate.limits_for(stack_from(BASE)))
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("notes",)]


def test_two_stores_on_one_file_see_each_others_leases_and_queue(tmp_path: Path) -> None:
    """Two gates sharing a file (as two processes do) share slots, queue and releases."""
    stack = stack_from(BASE)
    clock = FakeClock()
    one = Gate(stack, SqliteStore(tmp_path / "g.db", Gate.limits_for(stack)), clock)
    two = Gate(stack, SqliteStore(tmp_path / "g.db", Gate.limits_for(stack)), clock)
    assert one.acquire(Call("a", "inbound", N1)).outcome is Outcome.ADMITTED
    assert two.acquire(Call("b", "inbound", N1)).outcome is Outcome.ADMITTED
    queued = one.acquire(Call("c", "inbound", N1))
    assert queued.outcome is Outcome.QUEUED and queued.queue is not None
    assert queued.queue.position == 1
    assert two.acquire(Call("d", "inbound", N2)).outcome is Outcome.ADMITTED
    assert two.release("a").released  # frees N1: promotes c, queued through the other store
    clock.advance(1.0)
    promoted = one.acquire(Call("c", "inbound", N1))
    assert (promoted.outcome, promoted.reason) == (Outcome.ADMITTED, Reason.PROMOTED)
    assert two.usage()["leases"] == 3
    assert one.release("a").released is False  # released once, by the other store


def test_a_restart_keeps_leases_and_tombstones(tmp_path: Path) -> None:
    """A store reopened on its file still holds its leases and answers call_ended."""
    stack = stack_from(BASE)
    clock = FakeClock()
    store = SqliteStore(tmp_path / "g.db", Gate.limits_for(stack))
    gate = Gate(stack, store, clock)
    gate.acquire(Call("a", "inbound", N1))
    gate.acquire(Call("b", "inbound", N1))
    gate.release("b")
    store.close()
    again = Gate(stack, SqliteStore(tmp_path / "g.db", Gate.limits_for(stack)), clock)
    assert again.acquire(Call("a", "inbound", N1)).outcome is Outcome.ADMITTED  # replay
    assert again.acquire(Call("b", "inbound", N1)).reason is Reason.CALL_ENDED
    assert again.usage()["leases"] == 1


def test_a_row_keeps_the_record_as_the_one_codec_writes_it(tmp_path: Path) -> None:
    """A lease's row holds the codec's bytes (what Redis keeps too) and, beside them, only
    what the queries read: its state and expiry; the queue columns stay empty."""
    stack = stack_from(BASE)
    store = SqliteStore(tmp_path / "g.db", Gate.limits_for(stack))
    gate = Gate(stack, store, FakeClock())
    lease = gate.acquire(Call("a", "inbound", N1)).lease
    assert lease is not None
    store.close()
    db = sqlite3.connect(tmp_path / "g.db")
    state, expires_at, queue, seq, packed = db.execute(
        "SELECT state, expires_at, queue, seq, record FROM calls WHERE call_id = 'a'").fetchone()
    db.close()
    record = decode_record(lease.account, "a", packed, expires_at)
    assert (record.state, record.number, record.expires_at) == ("leased", N1, lease.expires_at)
    assert encode_record(record) == packed
    assert (state, queue, seq) == (0, "", 0)
