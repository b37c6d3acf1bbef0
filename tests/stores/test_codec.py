"""The one record codec (stores/codec.py): what SQLite and Redis keep of a call."""

from __future__ import annotations

import struct
from dataclasses import replace

import msgpack  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st
from tests.gate.stacks import N1

from callgate.model import Reason
from callgate.stores.base import Claim, KeyGroup, QueuePolicy, Record, Route, SlotNeed
from callgate.stores.codec import LEASE_MARK, SEP, UNITS, decode_record, encode_record

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


def _as_kept(record: Record) -> Record:
    """``record`` less the times its state never uses (a lease's outside "leased", a queue
    entry's without a sequence number), which the codec leaves out: the strategy sets them
    all."""
    if record.state != "leased":
        record = replace(record, admitted_at=0.0, expires_at=0.0, max_end=0.0, ttl_s=0.0,
                         promoted=False)
    if not record.seq:
        record = replace(record, enqueued_at=0.0, deadline=0.0, last_poll=0.0)
    return record


@given(records())
def test_a_record_survives_the_codec_unchanged(record: Record) -> None:
    """Every field a record's state uses comes back as it went in, abbreviated or not, keys
    in order; a lease's expiry is kept beside the record (SQLite's column, Redis's score)."""
    record = _as_kept(record)
    expiry = record.expires_at if record.state == "leased" else None
    back = decode_record(record.account, record.call_id, encode_record(record), expiry)
    assert back == record
    assert list(back.keys.items()) == list(record.keys.items())


@given(records())
def test_a_lease_starts_with_its_ttl_and_maximum_end_and_nothing_else_does(
        record: Record) -> None:
    """Redis's renew script reads a lease's TTL and maximum end from a fixed head, without
    decoding MessagePack; any other record starts with MessagePack (never 0xC1)."""
    packed = encode_record(record)
    if record.state == "leased":
        assert packed[:1] == LEASE_MARK
        assert struct.unpack_from(">dd", packed, 1) == (record.ttl_s, record.max_end)
    else:
        assert packed[:1] != LEASE_MARK


def test_a_lease_keeps_what_it_can_derive_by_reference_only() -> None:
    """A lease keeps pool slots, its own number and account, and its keys, by reference:
    its keys are implied by the held provider pairs, and its state is a small integer."""
    record = Record("acme", "c1", "leased", "f" * 24, N1, "inbound", held=(
        ("trunk:t1", 1), (f"number:{N1}", 1), ("account:acme", 1),
        ("provider:llm", 1), ("provider:llm:k2", 1)), keys={"llm": "k2"}, ttl_s=30.0)
    packed = encode_record(record)
    fields = msgpack.unpackb(packed[17:])
    assert fields["h"] == SEP.join(["trunk:t1", "#n", "#a", "~llm:k2"])
    assert "k" not in fields and "d" not in fields  # keys derived; direction the default
    assert fields["s"] == 0
    assert decode_record("acme", "c1", packed) == record
    assert len(packed) < 110
