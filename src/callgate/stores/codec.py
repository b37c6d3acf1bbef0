"""The one record codec: how every store that persists a call keeps it (SQLite, Redis).

A record is MessagePack with short names: states, directions and ``ended_by`` as small
integers, defaults left out, and the slots it holds as one string of tokens in which
what can be derived is abbreviated (the pool slot ``provider:P`` that comes with each
key ``provider:P:A``, the record's own number and account). ``keys`` is derived from
those pairs and stored only when it differs; a queued call's claim is kept with its
route written out. A lease is most of a busy store, so its record is kept small. Every
encoding is lossless: what cannot be abbreviated is written out in full.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Literal

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type hints

from callgate.model import Direction, Reason
from callgate.stores.base import (
    Claim,
    KeyGroup,
    QueuePolicy,
    Record,
    RecordState,
    Route,
    SlotNeed,
)

LEASED, QUEUED, REJECTED, ENDED = 0, 1, 2, 3
STATE_CODE: dict[RecordState, int] = {
    "leased": LEASED, "queued": QUEUED, "rejected": REJECTED, "ended": ENDED}
STATES: list[RecordState] = ["leased", "queued", "rejected", "ended"]
DIRECTION_CODE: dict[Direction, int] = {"inbound": 0, "outbound": 1}
DIRECTIONS: list[Direction] = ["inbound", "outbound"]
EndedBy = Literal["released", "expired", "cancelled", ""]
ENDED_BY_CODE: dict[EndedBy, int] = {"": 0, "released": 1, "expired": 2, "cancelled": 3}
ENDED_BYS: list[EndedBy] = ["", "released", "expired", "cancelled"]

# Held slots: tokens joined by SEP, units other than 1 after UNITS. A token is "~P:A" for
# the pair (provider:P, 1), (provider:P:A, 1); "#n" / "#a" for the record's own number /
# account slot; "!" + key for a key that starts with a marker; otherwise the key itself.
# Keys containing SEP or UNITS (never made by the gate) make the whole list JSON ("[...").
SEP, UNITS = "\x1f", "\x1e"
_POOL = "provider:"
_MARKERS = ("~", "#", "!", "[")

Held = tuple[tuple[str, int], ...]


def _token(key: str, units: int, number: str, account: str) -> str:
    if key == "number:" + number:
        token = "#n"
    elif key == "account:" + account:
        token = "#a"
    else:
        token = "!" + key if not key or key.startswith(_MARKERS) else key
    return token if units == 1 else f"{token}{UNITS}{units}"


def encode_held(
    held: Held, number: str, account: str
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The token string of ``held``, and the key choices its provider pairs imply (what
    :func:`decode_held` gives back for it)."""
    if any(SEP in key or UNITS in key for key, _ in held):
        return json.dumps(held, separators=(",", ":")), ()
    tokens = []
    implied = []
    i = 0
    while i < len(held):
        key, units = held[i]
        if (units == 1 and key.startswith(_POOL) and i + 1 < len(held)
                and ":" not in key[len(_POOL):]
                and held[i + 1][1] == 1 and held[i + 1][0].startswith(key + ":")):
            alias = held[i + 1][0][len(key) + 1:]
            tokens.append(f"~{key[len(_POOL):]}:{alias}")
            implied.append((key[len(_POOL):], alias))
            i += 2
            continue
        tokens.append(_token(key, units, number, account))
        i += 1
    return SEP.join(tokens), tuple(implied)


def decode_held(text: str, number: str, account: str) -> tuple[Held, tuple[tuple[str, str], ...]]:
    """``held`` and the key choices its provider pairs imply, from :func:`encode_held`."""
    held: list[tuple[str, int]] = []
    keys: list[tuple[str, str]] = []
    if text.startswith("["):
        held = [(key, units) for key, units in json.loads(text)]
    elif text:
        for token in text.split(SEP):
            token, _, count = token.partition(UNITS)
            units = int(count) if count else 1
            if token.startswith("~"):
                provider, _, alias = token[1:].partition(":")
                held += [(_POOL + provider, 1), (_POOL + token[1:], 1)]
                keys.append((provider, alias))
            elif token == "#n":
                held.append(("number:" + number, units))
            elif token == "#a":
                held.append(("account:" + account, units))
            else:
                held.append((token[1:] if token.startswith("!") else token, units))
    return tuple(held), tuple(keys)


def held_with_keys(record: Record) -> tuple[str, dict[str, str] | None]:
    """``record``'s held slots as tokens, and its keys only when the held provider pairs do
    not imply them (else None): what both stores write."""
    held, implied = encode_held(record.held, record.number, record.account)
    if tuple(record.keys.items()) == implied:
        return held, None
    return held, record.keys


def held_and_keys(
    text: str, number: str, account: str, keys: dict[str, str] | None
) -> tuple[Held, dict[str, str]]:
    """What :func:`held_with_keys` wrote: the held slots, and the keys (those stored, else
    those the held provider pairs imply)."""
    held, derived = decode_held(text, number, account)
    return held, dict(keys) if keys is not None else dict(derived)


RECORD_FORMAT = 2
"""The version of :func:`encode_record`'s bytes, bumped whenever they change. Redis marks
each tag with the format its records are in and a gate refuses another
(:func:`~callgate.stores.redis_records.check_format`); SQLite's schema version covers
its files."""

# A lease's record starts with this byte (one MessagePack never uses) and its TTL and
# maximum end as two big-endian doubles: all Redis's renew script reads of it
# (struct.unpack, no MessagePack decoding in Lua).
LEASE_MARK = b"\xc1"
_LEASE_HEAD = struct.Struct(">dd")


def encode_record(r: Record) -> bytes:
    """A record as every store that persists one keeps it: MessagePack with short names,
    codes for states and directions, defaults left out; a lease's behind
    :data:`LEASE_MARK` and its TTL and maximum end.

    Times are binary doubles (exact). Account and call id are the record's key and a
    lease's expiry its place in the store's index of leases by expiry (a column in
    SQLite, a score in Redis, where renewing moves only that), so none of them is in it;
    nor are the times a state never uses (a lease's outside ``leased``, a queue entry's
    without a sequence number).
    """
    d: dict[str, Any] = {"s": STATE_CODE[r.state], "f": r.fingerprint, "n": r.number}
    if r.direction != "inbound":
        d["d"] = DIRECTION_CODE[r.direction]
    if r.priority:
        d["p"] = r.priority
    held, keys = held_with_keys(r)
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
        d["c"] = claim_fields(r.claim)
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
        d["e"] = ENDED_BY_CODE[r.ended_by]
    packed: bytes = msgpack.packb(d)
    return head + packed


def decode_record(account: str, call_id: str, packed: bytes,
                  expires_at: float | None = None) -> Record:
    """The record :func:`encode_record` wrote for ``account``'s ``call_id``; a lease's
    ``expires_at`` is kept beside it (0.0 when not given)."""
    ttl_s = max_end = 0.0
    if packed[:1] == LEASE_MARK:
        ttl_s, max_end = _LEASE_HEAD.unpack_from(packed, 1)
        packed = packed[1 + _LEASE_HEAD.size:]
    d: dict[str, Any] = msgpack.unpackb(packed)
    get = d.get
    number = d["n"]
    record = Record(account, call_id, STATES[d["s"]], d["f"], number,
                    DIRECTIONS[get("d", 0)], int(get("p", 0)))
    record.held, record.keys = held_and_keys(get("h", ""), number, account, get("k"))
    if "at" in d:
        record.admitted_at = float(d["at"])
        record.expires_at = 0.0 if expires_at is None else expires_at
        record.max_end, record.ttl_s = max_end, ttl_s
        record.promoted = bool(get("pr", False))
    if "c" in d:
        record.claim = claim_from_fields(d["c"])
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
    record.ended_by = ENDED_BYS[get("e", 0)]
    return record


def claim_fields(claim: Claim) -> dict[str, Any]:
    """A queued call's claim as its record keeps it: short names, the route written out."""
    route = claim.route
    data: dict[str, Any] = {
        "a": claim.account, "i": claim.call_id, "n": claim.number, "d": claim.direction,
        "f": claim.fingerprint, "p": claim.priority, "t": claim.ttl_s,
        "x": claim.max_duration_s, "F": claim.force,
        "s": [[s.key, s.units, s.reserve] for s in route.slots],
        "g": [[g.provider, list(g.keys)] for g in route.groups],
        "w": list(route.windows)}
    if claim.queue is not None:
        data["q"] = [claim.queue.queue_max, claim.queue.max_wait_s]
    if claim.first_ttl_s:
        data["T"] = claim.first_ttl_s
    return data


def claim_from_fields(data: dict[str, Any]) -> Claim:
    """The claim :func:`claim_fields` wrote (with a route of its own)."""
    queue = data.get("q")
    return Claim(
        account=data["a"], call_id=data["i"], number=data["n"], direction=data["d"],
        priority=int(data["p"]), fingerprint=data["f"],
        route=Route(tuple(SlotNeed(k, int(u), int(r)) for k, u, r in data["s"]),
                    tuple(KeyGroup(g[0], tuple(g[1])) for g in data["g"]), tuple(data["w"])),
        ttl_s=float(data["t"]), max_duration_s=float(data["x"]),
        queue=QueuePolicy(int(queue[0]), float(queue[1])) if queue else None,
        force=bool(data["F"]), first_ttl_s=float(data.get("T", 0.0)),
    )
