"""How the Redis store names a call: record ids and times as Redis reads them.

A record itself is the one codec's (:mod:`callgate.stores.codec`), the bytes SQLite
keeps too; a lease's starts with its TTL and maximum end, all the renew script
(``lua/renew.lua``) reads of it.
"""

from __future__ import annotations

import math

from callgate.stores.base import Record
from callgate.stores.codec import decode_record


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
