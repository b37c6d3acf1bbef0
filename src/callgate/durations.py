"""Durations, one parser for stack files and flags alike.

Accepted: a number of seconds (``180``, ``"180"``, ``2.5``), a number with a unit
(``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``), or units added up from the largest
down (``"1m30s"``, ``"1h 15m"``, ``"2d12h"``).
"""

from __future__ import annotations

import math
import re

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_ORDER = list(_UNITS)  # largest first: a compound names each unit once, in this order
_NUMBER = r"\d+(?:\.\d+)?"
_BARE = re.compile(rf"^\s*({_NUMBER})\s*$")
_COMPOUND = re.compile(rf"^\s*(?:{_NUMBER}\s*(?:ms|s|m|h|d)\s*)+$")
_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d)")
ACCEPTED = ('a number of seconds or a string with units: "180", "250ms", "30s", "5m", '
            '"1h", "1d", "1m30s"')


def parse_duration(value: object) -> float:
    """Seconds in ``value``; raises ``ValueError`` saying what is accepted."""
    if isinstance(value, bool):
        raise ValueError(f"expected {ACCEPTED}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise ValueError(f"expected {ACCEPTED}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a finite, non-negative duration ({ACCEPTED})")
    return seconds


def _parse_text(text: str) -> float:
    bare = _BARE.match(text)
    if bare is not None:
        return float(bare.group(1))
    if _COMPOUND.match(text) is None:
        raise ValueError(f"expected {ACCEPTED}")
    seconds, last = 0.0, -1
    for number, unit in _PART.findall(text):
        rank = _ORDER.index(unit)
        if rank <= last:
            raise ValueError(f"expected units from the largest down, each once "
                             f"(d, h, m, s, ms), e.g. \"1h30m\" ({ACCEPTED})")
        last = rank
        seconds += float(number) * _UNITS[unit]
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
