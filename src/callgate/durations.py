"""Durations: ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"250ms"`` or a number of seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
ACCEPTED = 'a number of seconds or a string with a unit: "250ms", "30s", "5m", "1h", "1d"'


def parse_duration(value: object) -> float:
    """Seconds in ``value``; raises ``ValueError`` saying what is accepted."""
    if isinstance(value, bool):
        raise ValueError(f"expected {ACCEPTED}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise ValueError(f"expected {ACCEPTED}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"expected {ACCEPTED}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a finite, non-negative duration ({ACCEPTED})")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds``: 3600 -> ``"1h"``, 90 -> ``"90s"``."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        count = seconds / size
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    if seconds * 1000 == int(seconds * 1000):
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"
