"""How the Redis store names a call: record ids and times as Redis reads them.

A record itself is the one codec's (:mod:`callgate.stores.codec`), the bytes SQLite
keeps too; a lease's starts with its TTL and maximum end, all the renew script
(``lua/renew.lua``) reads of it.
"""

from __future__ import annotations

import math

from callgate.errors import StoreError
from callgate.stores.base import Record
from callgate.stores.codec import RECORD_FORMAT, decode_record


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


def load_record(ident: bytes | str, packed: bytes, expires_at: float | None = None) -> Record:
    """The record (:func:`~callgate.stores.codec.decode_record`) kept under the id
    ``ident``; a lease's ``expires_at`` is its score in ``P due``."""
    return decode_record(*split_id(ident), packed, expires_at)


def check_format(found: bytes | None, has_calls: bool, tag: str, where: str) -> None:
    """Refuse a tag whose calls are in another record format than :data:`RECORD_FORMAT`
    (another callgate version's). ``found`` is its ``<tag>format`` mark; None (no mark)
    matters only while calls are kept there (``has_calls``): callgates before format 2
    wrote no mark."""
    if found is None and not has_calls:
        return
    if found is not None and found.decode() == str(RECORD_FORMAT):
        return
    kept = "records older than format 2" if found is None else f"format {found.decode()} records"
    raise StoreError(
        f"the Redis store at {where} keeps calls under {tag!r} as {kept}, written by another "
        f"callgate version; this callgate reads and writes format {RECORD_FORMAT}. Let those "
        f"calls end and be forgotten (ended_ttl) under that version, delete the keys of "
        f"{tag!r}, or give this stack another prefix (?prefix=)")
