"""Clocks in epoch seconds (float). The gate reads time only through one of these."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


def system_clock() -> float:
    """Wall-clock epoch seconds."""
    return time.time()


class ScaledClock:
    """Epoch seconds that run ``scale`` times faster than the wall, from the moment of creation.

    ``serve --time-scale K`` uses it so a load test can play K simulated seconds per
    second while windows, TTLs and waits keep their meaning in simulated time.
    """

    def __init__(self, scale: float, base: Clock = time.time) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = scale
        self._base = base
        self._start = base()

    def __call__(self) -> float:
        return self._start + (self._base() - self._start) * self.scale
