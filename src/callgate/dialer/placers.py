"""Placers: what actually makes an outbound call once the gate has admitted it.

A placer gets one :class:`Attempt` (an admitted try, its lease already held) and answers
with a :class:`Placement`: the call's result and how long it held the line. The dialler
has committed the try as ``placing`` before it asks, so a placer is asked at most once
per try, even across crashes.

- :class:`DryRunPlacer` draws the result from the campaign's ``[dry_run]`` table with a
  generator seeded per call id (the same campaign and seed give the same outcomes, in any
  order, after any restart). With ``log`` it appends one line per placed call to a file
  opened ``O_APPEND`` and fsyncs it before answering: a record of placements kept outside
  the dialler's own state, which the crash test reads.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from callgate.dialer.campaign import DryRunTable

Result = Literal["answered", "busy", "no_answer", "failed", "abandoned", "machine", "unknown"]
RESULTS: tuple[Result, ...] = ("answered", "busy", "no_answer", "failed", "abandoned",
                               "machine", "unknown")
PLACERS = ("dry-run",)


@dataclass(frozen=True)
class Attempt:
    """One admitted try: who, from which of our numbers, under which call id."""

    call_id: str
    row: int
    try_no: int
    phone: str
    caller_id: str
    ring_timeout_s: float
    extra: Mapping[str, str] = field(default_factory=dict)
    keys: Mapping[str, str] = field(default_factory=dict)  # provider keys the lease holds


@dataclass(frozen=True)
class Placement:
    """How a try went: its result, why, and seconds it rang and talked (its lease's life)."""

    result: Result
    reason: str
    ring_s: float = 0.0
    talk_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return self.ring_s + self.talk_s


class Placer(Protocol):
    """Places one call per :class:`Attempt`; must not raise for an ordinary failed call."""

    name: str

    def place(self, attempt: Attempt) -> Placement: ...

    def close(self) -> None: ...


class DryRunPlacer:
    """Outcomes drawn from ``[dry_run]``; nobody is called (see the module docstring)."""

    name = "dry-run"

    def __init__(self, table: DryRunTable, *, log: str | Path | None = None) -> None:
        self._table = table
        self._cumulative = (("answered", table.answer), ("busy", table.busy),
                            ("no_answer", table.no_answer), ("failed", table.failed))
        self._fd: int | None = None
        if log is not None:
            self._fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def place(self, attempt: Attempt) -> Placement:
        rng = random.Random(f"{self._table.seed}:{attempt.call_id}")
        draw, result = rng.random(), "failed"
        for name, share in self._cumulative:
            if draw < share:
                result = name
                break
            draw -= share
        table = self._table
        ring = min(rng.expovariate(1 / table.ring_time) if table.ring_time > 0 else 0.0,
                   attempt.ring_timeout_s)
        if self._fd is not None:
            line = json.dumps({"call_id": attempt.call_id, "row": attempt.row,
                               "phone": attempt.phone, "caller_id": attempt.caller_id})
            os.write(self._fd, (line + "\n").encode())
            os.fsync(self._fd)
        if result == "answered":
            talk = rng.expovariate(1 / table.talk_time) if table.talk_time > 0 else 0.0
            return Placement("answered", "dry-run: answered", ring, talk)
        if result == "no_answer":
            return Placement("no_answer", "dry-run: rang out", attempt.ring_timeout_s)
        if result == "busy":
            return Placement("busy", "dry-run: busy", 0.0)
        return Placement("failed", "dry-run: failed", 0.0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def make_placer(name: str, table: DryRunTable, *, log: str | Path | None = None) -> Placer:
    """The placer called ``name`` (``dry-run``); raises ``ValueError`` naming what exists."""
    if name == "dry-run":
        return DryRunPlacer(table, log=log)
    raise ValueError(f"unknown placer {name!r}; available: {', '.join(PLACERS)}")
