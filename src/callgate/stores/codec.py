"""Records to JSON and back, for stores that keep them outside the process."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from callgate.model import Reason
from callgate.stores.base import Claim, KeyGroup, QueuePolicy, Record, SlotNeed


def dump_record(record: Record) -> str:
    # dataclasses.asdict deep-copies every field; a shallow dict is several times faster
    # and only the claim (a nested frozen dataclass) needs converting.
    data = dict(record.__dict__)
    if record.claim is not None:
        data["claim"] = asdict(record.claim)
    return json.dumps(data, separators=(",", ":"))


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
    data["held"] = tuple((key, units) for key, units in data["held"])
    data["claim"] = _claim(data["claim"]) if data["claim"] is not None else None
    data["reason"] = Reason(data["reason"]) if data["reason"] is not None else None
    return Record(**data)
