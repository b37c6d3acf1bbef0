"""Records to SQLite rows and back: one column per field the SQL reads, compact values.

A lease is most of a busy store, so its row is kept small: states, directions and
``ended_by`` are small integers, and the slots it holds are one string of tokens in
which what can be derived is abbreviated (the pool slot ``provider:P`` that comes with
each key ``provider:P:A``, the record's own number and account). ``keys`` is derived
from those pairs and stored only when it differs. The rare fields (a queued call's
claim, a rejection's reason) go in one JSON column. Every encoding is lossless: what
cannot be abbreviated is written out in full.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

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

COLUMNS = ("call_id, account, state, number, direction, priority, fingerprint, held, keys, "
           "admitted_at, expires_at, max_end, ttl_s, promoted, seq, enqueued_at, deadline, "
           "last_poll, until, ended_by, extra")
WIDTH = COLUMNS.count(",") + 1

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


def record_row(record: Record) -> tuple[Any, ...]:
    """The column values of ``record``, in :data:`COLUMNS` order."""
    held, stored = held_with_keys(record)
    keys: str | None = None
    if stored is not None:
        keys = json.dumps(stored, separators=(",", ":"))
    extra: dict[str, Any] = {}
    if record.claim is not None:
        extra["claim"] = claim_fields(record.claim)
    if record.reason is not None:
        extra["reason"] = record.reason.value
    if record.blocker_key is not None:
        extra["blocker_key"] = record.blocker_key
    if record.retry_after_s is not None:
        extra["retry_after_s"] = record.retry_after_s
    return (
        record.call_id, record.account, STATE_CODE[record.state], record.number,
        DIRECTION_CODE[record.direction], record.priority, record.fingerprint,
        held, keys, record.admitted_at, record.expires_at, record.max_end, record.ttl_s,
        int(record.promoted), record.seq, record.enqueued_at, record.deadline,
        record.last_poll, record.until, ENDED_BY_CODE[record.ended_by],
        json.dumps(extra, separators=(",", ":")) if extra else None,
    )


def row_record(row: Sequence[Any]) -> Record:
    """The record of a row of :data:`COLUMNS` (as :func:`record_row` wrote it)."""
    (call_id, account, state, number, direction, priority, fingerprint, held_text, keys_text,
     admitted_at, expires_at, max_end, ttl_s, promoted, seq, enqueued_at, deadline,
     last_poll, until, ended_by, extra_text) = row
    held, keys = held_and_keys(held_text, number, account,
                               json.loads(keys_text) if keys_text is not None else None)
    record = Record(
        account=account, call_id=call_id, state=STATES[state],
        fingerprint=fingerprint,
        number=number, direction=DIRECTIONS[direction], priority=priority, held=held,
        keys=keys, admitted_at=admitted_at, expires_at=expires_at, max_end=max_end,
        ttl_s=ttl_s, promoted=bool(promoted), seq=seq, enqueued_at=enqueued_at,
        deadline=deadline, last_poll=last_poll, until=until, ended_by=ENDED_BYS[ended_by],
    )
    if extra_text is not None:
        extra = json.loads(extra_text)
        if "claim" in extra:
            record.claim = claim_from_fields(extra["claim"])
        if "reason" in extra:
            record.reason = Reason(extra["reason"])
        record.blocker_key = extra.get("blocker_key")
        record.retry_after_s = extra.get("retry_after_s")
    return record


def claim_fields(claim: Claim) -> dict[str, Any]:
    """A queued call's claim as its record keeps it (SQLite in its JSON column, Redis as
    JSON in the record): short names, the route written out."""
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
