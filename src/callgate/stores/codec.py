"""Records to JSON and back, for stores that keep them outside the process."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, fields
from typing import Any

from callgate.model import Reason
from callgate.stores.base import Claim, KeyGroup, QueuePolicy, Record, SlotNeed

_DEFAULTS = {f.name: f.default for f in fields(Record) if f.default is not MISSING}


def dump_record(record: Record) -> str:
    """JSON of ``record`` without the fields left at their defaults (most of a lease's)."""
    # dataclasses.asdict deep-copies every field; a shallow dict is several times faster
    # and only the claim (a nested frozen dataclass) needs converting.
    data: dict[str, Any] = {}
    for name in _NAMES:
        value = getattr(record, name)
        if name not in _DEFAULTS or value != _DEFAULTS[name]:
            data[name] = value
    if record.claim is not None:
        data["claim"] = {
            f.name: getattr(record.claim, f.name) for f in fields(Claim)
        }
        data["claim"]["slots"] = [asdict(slot) for slot in record.claim.slots]
        data["claim"]["groups"] = [
            {"provider": g.provider, "keys": g.keys} for g in record.claim.groups
        ]
        queue = record.claim.queue
        data["claim"]["queue"] = asdict(queue) if queue is not None else None
    return json.dumps(data, separators=(",", ":"))


_NAMES = [f.name for f in fields(Record)]


def _claim(data: dict[str, Any]) -> Claim:
    queue = data["queue"]
    return Claim(
        account=data["account"], call_id=data["call_id"], number=data["number"],
        direction=data["direction"], priority=data["priority"], fingerprint=data["fingerprint"],
        slots=tuple(SlotNeed(**slot) for slot in data["slots"]),
        groups=tuple(KeyGroup(g["provider"], tuple(g["keys"])) for g in data["groups"]),
        windows=tuple(data["windows"]), ttl_s=data["ttl_s"],
        max_duration_s=data["max_duration_s"],
        queue=QueuePolicy(**queue) if queue is not None else None, force=data["force"],
    )


def load_record(text: str) -> Record:
    data = json.loads(text)
    if "held" in data:
        data["held"] = tuple((key, units) for key, units in data["held"])
    if data.get("claim") is not None:
        data["claim"] = _claim(data["claim"])
    if data.get("reason") is not None:
        data["reason"] = Reason(data["reason"])
    return Record(**data)
