"""Choosing the caller number: the most room left in its windows and concurrency."""

from __future__ import annotations

from pathlib import Path

from tests.dialer.helpers import pool_stack

from callgate.config import load_stack
from callgate.dialer.headroom import Headroom
from callgate.model import Call
from callgate.testing import memory_gate


def test_the_number_with_the_most_room_wins_and_own_calls_count(tmp_path: Path) -> None:
    """A number with window starts used loses to a fresh one; took()/freed() keep it current."""
    path, (a, b) = pool_stack(tmp_path, numbers=2, per_hour=4, number_cap=2)
    gate = memory_gate(load_stack(path))
    assert gate.acquire(Call("x1", "outbound", a)).admitted
    room = Headroom(gate.stack, gate.usage(), (a, b), gate.clock())
    # a: 1 of its 2 concurrent used; b: only the shared trunk's 1 of 1000
    assert room.room(a) == 0.5 and room.room(b) == 0.999
    assert room.pick([a, b]) == b
    room.took(b)
    room.took(b)
    assert room.room(b) == 0.0 and room.pick([a, b]) == a
    room.freed(b)
    room.freed(b)
    assert room.room(b) == 0.5  # concurrency came back, the window's starts did not
