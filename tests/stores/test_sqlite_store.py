"""The SQLite store's own concerns: its row encoding, its schema version, shared files."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.conftest import stack_from
from tests.gate.stacks import BASE, N1, N2

from callgate.errors import StoreError
from callgate.gate import Gate
from callgate.model import Call, Outcome, Reason
from callgate.stores import SqliteStore
from callgate.stores.base import Claim, KeyGroup, QueuePolicy, Record, Route, SlotNeed
from callgate.stores.codec import SEP, UNITS, record_row, row_record
from callgate.testing import FakeClock

# Keys as the gate makes them, and keys no gate makes (markers, separators, colons, empty).
names = st.sampled_from(["a", "llm", "k1", "x:y", "~p", "#n", "!", "[", "", SEP, UNITS, "a b"])
keys = st.one_of(
    st.builds(lambda layer, name: f"{layer}:{name}",
              st.sampled_from(["trunk", "number", "account", "resource", "provider"]), names),
    names,
)
held = st.lists(st.tuples(keys, st.integers(-3, 5)), max_size=8)


@st.composite
def provider_pairs(draw: st.DrawFn) -> list[tuple[str, int]]:
    """A pool slot and one of its keys, as the kernel appends them for a provider group."""
    provider, alias = draw(names), draw(names)
    return [(f"provider:{provider}", 1), (f"provider:{provider}:{alias}", 1)]


@st.composite
def records(draw: st.DrawFn) -> Record:
    number = draw(st.sampled_from(["+15550000001", "a b", ""]))
    account = draw(st.sampled_from(["acme", "#a", ""]))
    slots = [*draw(held), (f"number:{number}", draw(st.integers(1, 2))),
             (f"account:{account}", 1)]
    pairs = draw(st.lists(provider_pairs(), max_size=3))
    parts = draw(st.permutations([*([slot] for slot in slots), *pairs]))
    taken = tuple(item for part in parts for item in part)
    chosen = {key.split(":")[1]: key.split(":", 2)[2] for key, _ in taken
              if key.startswith("provider:") and key.count(":") >= 2}
    route = Route((SlotNeed("trunk:t", 2, 1),), (KeyGroup("llm", ("k1", "k2")),),
                  ("window:trunk:t:inbound:1s",))
    claim = Claim(account, "c", number, "inbound", 2, "f" * 24, route, 30.0, 60.0,
                  QueuePolicy(3, 120.0))
    return Record(
        account=account, call_id=draw(st.sampled_from(["c1", "x:y"])),
        state=draw(st.sampled_from(["leased", "queued", "rejected", "ended"])),
        fingerprint=draw(st.sampled_from(["0123456789abcdef01234567", "ABC", ""])),
        number=number, direction=draw(st.sampled_from(["inbound", "outbound"])),
        priority=draw(st.integers(-2, 2)), held=draw(st.sampled_from([taken, ()])),
        keys=draw(st.sampled_from([chosen, {}, {"llm": "k9"}])),
        admitted_at=draw(st.floats(0, 2e9)), expires_at=1.5, max_end=2.25, ttl_s=30.0,
        promoted=draw(st.booleans()), claim=draw(st.sampled_from([None, claim])),
        seq=draw(st.integers(0, 99)), enqueued_at=3.0, deadline=4.0, last_poll=5.0,
        until=draw(st.floats(0, 2e9)), reason=draw(st.sampled_from([None, Reason.QUEUE_FULL])),
        blocker_key=draw(st.sampled_from([None, "queue:+1"])),
        retry_after_s=draw(st.sampled_from([None, 2.5])),
        ended_by=draw(st.sampled_from(["", "released", "expired", "cancelled"])),
    )


@given(records())
def test_a_record_survives_its_row_unchanged(record: Record) -> None:
    """Every field comes back from a row as it went in, abbreviated or not, keys in order."""
    back = row_record(record_row(record))
    assert back == record
    assert list(back.keys.items()) == list(record.keys.items())


@given(records())
def test_a_record_survives_redis_encoding_unchanged(record: Record) -> None:
    """Redis keeps a record with the same codec for held slots, keys and claim: every field
    comes back as it went in (a lease's expiry is kept beside it, as its score in P due)."""
    redis_records = pytest.importorskip("callgate.stores.redis_records")
    # Redis leaves out the times a record's state never uses (a lease's outside "leased",
    # a queue entry's without a sequence number): the strategy sets them all.
    if record.state != "leased":
        record = replace(record, admitted_at=0.0, expires_at=0.0, max_end=0.0, ttl_s=0.0,
                         promoted=False)
    if not record.seq:
        record = replace(record, enqueued_at=0.0, deadline=0.0, last_poll=0.0)
    ident = redis_records.rid(record.account, record.call_id)
    expiry = record.expires_at if record.state == "leased" else None
    back = redis_records.load_record(ident, redis_records.encode_record(record), expiry)
    assert back == record
    assert list(back.keys.items()) == list(record.keys.items())


def test_a_lease_row_abbreviates_what_it_can_derive(tmp_path: Path) -> None:
    """A lease stores pool slots, its own number and account, and its keys, by reference only."""
    record = Record("acme", "c1", "leased", "f" * 24, N1, "inbound", held=(
        ("trunk:t1", 1), (f"number:{N1}", 1), ("account:acme", 1),
        ("provider:llm", 1), ("provider:llm:k2", 1)), keys={"llm": "k2"})
    row = record_row(record)
    assert SEP.join(["trunk:t1", "#n", "#a", "~llm:k2"]) in row
    assert row[8] is None  # keys: derived from the held pairs
    assert row_record(row) == record


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
    with pytest.raises(StoreError, match=r"old\.db.*schema 1.*needs schema 2"):
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
