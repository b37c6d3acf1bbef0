"""How the Redis store keeps a call: record ids, times as Redis reads them, and records.

A record is MessagePack with short names (defaults left out; account and call id are in
its key); a lease's record starts with :data:`LEASE_MARK` and its TTL and maximum end as
two big-endian doubles, all the renew script (``lua/renew.lua``) reads of it. What SQLite
keeps too (held slots, provider keys, a queued call's claim) goes through the one codec
(:mod:`callgate.stores.codec`).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type hints

from callgate.model import Reason
from callgate.stores.base import Claim, Record
from callgate.stores.codec import (
    claim_fields,
    claim_from_fields,
    held_and_keys,
    held_with_keys,
)


def rid(account: str, call_id: str) -> str:
    return f"{len(account.encode())}:{account}:{call_id}"


def split_id(ident: bytes | str) -> tuple[str, str]:
    """(account, call id) of a record id ``<bytes of account>:<account>:<call id>``."""
    raw = ident.encode() if isinstance(ident, str) else ident
    length, _, rest = raw.partition(b":")
    size = int(length)
    return rest[:size].decode(), rest[size + 1:].decode()


def fmt(x: float) -> str:
    """A float as Redis scores and the scripts read it, exactly (17 significant digits)."""
    return "inf" if math.isinf(x) else repr(float(x))


# records ------------------------------------------------------------------------------------
def claim_json(claim: Claim) -> str:
    """A queued call's claim, as its record keeps it (the one claim codec, as JSON)."""
    return json.dumps(claim_fields(claim), separators=(",", ":"))


def load_claim(text: str) -> Claim:
    return claim_from_fields(json.loads(text))


# A lease's record starts with this byte (one MessagePack never uses) and its TTL and
# maximum end as two big-endian doubles: all the renew script reads (struct.unpack, no
# MessagePack decoding in Lua).
LEASE_MARK = b"\xc1"
_LEASE_HEAD = struct.Struct(">dd")


def encode_record(r: Record) -> bytes:
    """A record as Redis keeps it: MessagePack, short names, defaults left out; a lease's
    behind :data:`LEASE_MARK` and its TTL and maximum end.

    Times are binary doubles (exact); account and call id are in the key; a lease's
    expiry is not in it (``P due`` has it: renewing moves only that).
    """
    d: dict[str, Any] = {"s": r.state, "f": r.fingerprint, "n": r.number, "d": r.direction}
    if r.priority:
        d["p"] = r.priority
    held, keys = held_with_keys(r)  # as SQLite writes them
    if held:
        d["h"] = held
    if keys is not None:
        d["k"] = keys
    head = b""
    if r.state == "leased":
        head = LEASE_MARK + _LEASE_HEAD.pack(r.ttl_s, r.max_end)
        d["at"] = r.admitted_at
        if r.promoted:
            d["pr"] = True
    if r.claim is not None:
        d["c"] = claim_json(r.claim)
    if r.seq:
        d["q"], d["eq"], d["dl"], d["lp"] = r.seq, r.enqueued_at, r.deadline, r.last_poll
    if r.until:
        d["u"] = r.until
    if r.reason is not None:
        d["r"] = str(r.reason)
    if r.blocker_key is not None:
        d["b"] = r.blocker_key
    if r.retry_after_s is not None:
        d["ra"] = r.retry_after_s
    if r.ended_by:
        d["eb"] = r.ended_by
    packed: bytes = msgpack.packb(d)
    return head + packed


def load_record(ident: bytes | str, packed: bytes, expires_at: float | None = None) -> Record:
    """The record ``encode_record`` wrote under ``ident``; a lease's ``expires_at`` is its
    score in ``P due``."""
    ttl_s = max_end = 0.0
    if packed[:1] == LEASE_MARK:
        ttl_s, max_end = _LEASE_HEAD.unpack_from(packed, 1)
        packed = packed[1 + _LEASE_HEAD.size:]
    d: dict[str, Any] = msgpack.unpackb(packed)
    account, call_id = split_id(ident)
    get = d.get
    record = Record(account=account, call_id=call_id, state=d["s"], fingerprint=d["f"],
                    number=d["n"], direction=d["d"], priority=int(get("p", 0)))
    record.held, record.keys = held_and_keys(get("h", ""), record.number, account, get("k"))
    if "at" in d:
        record.admitted_at = float(d["at"])
        record.expires_at = 0.0 if expires_at is None else expires_at
        record.max_end, record.ttl_s = max_end, ttl_s
        record.promoted = bool(get("pr", False))
    if "c" in d:
        record.claim = load_claim(d["c"])
    if "q" in d:
        record.seq = int(d["q"])
        record.enqueued_at = float(d["eq"])
        record.deadline = float(d["dl"])
        record.last_poll = float(d["lp"])
    record.until = float(get("u", 0.0))
    if get("r"):
        record.reason = Reason(d["r"])
    record.blocker_key = get("b")
    if "ra" in d:
        record.retry_after_s = float(d["ra"])
    record.ended_by = get("eb", "")
    return record
