"""Helpers for testing code that uses callgate: a fake clock and an in-memory gate."""

from __future__ import annotations

from callgate.config import Stack
from callgate.gate import Gate
from callgate.stores.memory import MemoryStore


class FakeClock:
    """A clock that moves only when told to, and never backwards (epoch seconds)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance by {seconds} s)")
        self.now += seconds
        return self.now

    def jump(self, to: float) -> float:
        if to < self.now:
            raise ValueError(f"a clock cannot go backwards (from {self.now} to {to})")
        self.now = to
        return self.now


def memory_gate(stack: Stack, clock: FakeClock | None = None, seed: int = 0) -> Gate:
    """A gate on a fresh memory store with a fake clock (``gate.clock``) and a seeded rng."""
    import random

    return Gate(stack, MemoryStore(Gate.limits_for(stack)), clock or FakeClock(),
                rng=random.Random(seed))
