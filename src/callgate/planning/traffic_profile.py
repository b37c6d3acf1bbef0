"""Hourly traffic profiles: how many calls arrive in each hour of a typical day.

A clinic's phone rings little at night, climbs from eight, peaks mid-morning, dips at
lunch and tails off in the evening. A profile is those 24 numbers, hour 0 (midnight to
1 am) first. Two file formats are read:

* TOML: ``calls = [24 numbers]`` and, optionally, ``description = "..."``;
* CSV: a ``hour,calls`` header, then one ``hour,calls`` row for each hour 0..23.

Counts are calls per hour (fractions allowed, none negative, not all zero). Errors name
the file, the place in it, the bad value and what is accepted.
"""

from __future__ import annotations

import csv
import io
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

HOURS = 24
ACCEPTED = (
    'a TOML file with calls = [24 numbers] (hour 0 first) or a CSV file with a "hour,calls" '
    "header and one row per hour 0..23"
)


class ProfileError(ValueError):
    """The profile file is wrong: the message names the file, the place, the value."""


@dataclass(frozen=True)
class HourlyProfile:
    """Calls arriving in each hour of the day, hour 0 first (24 values, not all zero)."""

    calls: tuple[float, ...]
    description: str = ""

    def __post_init__(self) -> None:
        problem = _problem(self.calls)
        if problem:
            raise ProfileError(problem)

    @property
    def total(self) -> float:
        """Calls in the whole day."""
        return math.fsum(self.calls)

    @property
    def busy_hour(self) -> int:
        """The hour (0..23) with the most calls; the earliest one on a tie."""
        return max(range(HOURS), key=lambda hour: (self.calls[hour], -hour))

    @property
    def busy_hour_calls(self) -> float:
        """Calls in the busy hour."""
        return self.calls[self.busy_hour]

    @property
    def busy_hour_ratio(self) -> float:
        """The busy hour's share of the day's calls."""
        return self.busy_hour_calls / self.total


def _problem(calls: tuple[float, ...]) -> str:
    if len(calls) != HOURS:
        return f"expected {HOURS} hourly values, got {len(calls)}"
    for hour, value in enumerate(calls):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"hour {hour}: {value!r} is not a number of calls"
        if not math.isfinite(value) or value < 0:
            return f"hour {hour}: {value!r} is not a finite number of calls >= 0"
    if not any(calls):
        return "every hour has 0 calls: nothing to plan for"
    return ""


def _from_toml(text: str, source: str) -> HourlyProfile:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{source}: not valid TOML ({exc}); expected {ACCEPTED}") from None
    unknown = sorted(set(raw) - {"calls", "description"})
    if unknown:
        raise ProfileError(
            f"{source}: unknown key(s) {unknown}; accepted keys: calls, description"
        )
    calls = raw.get("calls")
    if not isinstance(calls, list):
        raise ProfileError(f"{source}: calls = {calls!r}: expected a list of {HOURS} numbers")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ProfileError(f"{source}: description = {description!r}: expected a string")
    problem = _problem(tuple(calls))
    if problem:
        raise ProfileError(f"{source}: calls: {problem}")
    return HourlyProfile(tuple(float(value) for value in calls), description)


def _from_csv(text: str, source: str) -> HourlyProfile:
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows or [cell.strip().lower() for cell in rows[0]] != ["hour", "calls"]:
        first = rows[0] if rows else []
        raise ProfileError(f"{source}: line 1 = {first!r}: expected the header 'hour,calls'")
    calls: dict[int, float] = {}
    for line, row in enumerate(rows[1:], start=2):
        cells = [cell.strip() for cell in row]
        try:
            if len(cells) != 2:
                raise ValueError
            hour, value = int(cells[0]), float(cells[1])
        except ValueError:
            raise ProfileError(
                f"{source}: line {line} = {row!r}: expected 'hour,calls' with an hour "
                f"0..23 and a number of calls"
            ) from None
        if not 0 <= hour < HOURS or hour in calls:
            raise ProfileError(
                f"{source}: line {line}: hour {hour} is out of 0..23 or given twice"
            )
        calls[hour] = value
    missing = [hour for hour in range(HOURS) if hour not in calls]
    if missing:
        raise ProfileError(f"{source}: no row for hour(s) {missing}; every hour 0..23 needs one")
    ordered = tuple(calls[hour] for hour in range(HOURS))
    problem = _problem(ordered)
    if problem:
        raise ProfileError(f"{source}: {problem}")
    return HourlyProfile(ordered)


def parse_profile(text: str, source: str = "profile", *, csv_format: bool = False) -> HourlyProfile:
    """A profile from the text of a TOML file, or of a CSV file with ``csv_format``."""
    return _from_csv(text, source) if csv_format else _from_toml(text, source)


def load_profile(path: str | Path) -> HourlyProfile:
    """Read a profile file: ``.csv`` is CSV, anything else TOML. Raises :class:`ProfileError`."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ProfileError(f"{file}: cannot read it ({reason}); expected {ACCEPTED}") from None
    return parse_profile(text, str(file), csv_format=file.suffix.lower() == ".csv")
