"""When a callee may be called: calling hours and days in the callee's own time zone.

Picture a wall of clocks, one per time zone: a contact in Los Angeles may be called while
*their* clock reads between the campaign's ``calling_hours`` on one of its
``calling_days``, whatever the dialler's own clock says. Hours are ``"HH:MM-HH:MM"``, the
end exclusive (``"09:00-20:00"`` allows 19:59:59, not 20:00:00); ``"00:00-24:00"`` is all
day. Times are epoch seconds; local times come from :mod:`zoneinfo`, so daylight-saving
changes move the window with the callee's clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^\s*(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})\s*$")
HOURS_ACCEPTED = ('"HH:MM-HH:MM" in the callee\'s local time, start before end, end exclusive, '
                  'e.g. "09:00-20:00"; "00:00-24:00" is all day')


def parse_hours(value: str) -> tuple[int, int]:
    """(start, end) in minutes after local midnight; raises ``ValueError`` naming the format."""
    match = _HOURS.match(value)
    if match is None:
        raise ValueError(f"expected {HOURS_ACCEPTED}")
    sh, sm, eh, em = (int(part) for part in match.groups())
    if sh > 23 or sm > 59 or eh > 24 or em > 59 or (eh == 24 and em != 0):
        raise ValueError(f"not a time of day; expected {HOURS_ACCEPTED}")
    start, end = sh * 60 + sm, eh * 60 + em
    if start >= end:
        raise ValueError(f"the start must be before the end (no overnight spans); "
                         f"expected {HOURS_ACCEPTED}")
    return start, end


@dataclass(frozen=True)
class CallingHours:
    """Minutes ``[start_min, end_min)`` of the callee's local day, on ``days`` (0 = Monday)."""

    start_min: int
    end_min: int
    days: frozenset[int]

    def _span(self, day: date, zone: ZoneInfo) -> tuple[float, float]:
        """Epoch seconds of the window's start and (exclusive) end on local ``day``."""
        start = datetime.combine(day, time(0), zone) + timedelta(minutes=self.start_min)
        end = datetime.combine(day, time(0), zone) + timedelta(minutes=self.end_min)
        # combine() + timedelta is wall-clock arithmetic: re-attach the zone so the offset
        # is the one in force at that local time (a DST day is 23 or 25 hours long).
        return (start.replace(tzinfo=zone).timestamp(), end.replace(tzinfo=zone).timestamp())

    def is_open(self, at: float, zone: ZoneInfo) -> bool:
        """May a callee in ``zone`` be called at epoch second ``at``?"""
        local = datetime.fromtimestamp(at, zone)
        if local.weekday() not in self.days:
            return False
        minute = local.hour * 60 + local.minute + local.second / 60 + local.microsecond / 6e7
        return self.start_min <= minute < self.end_min

    def next_open(self, at: float, zone: ZoneInfo) -> float | None:
        """The first epoch second at or after ``at`` when the callee may be called.

        ``None`` when no day is allowed (validation refuses such a campaign).
        """
        if self.is_open(at, zone):
            return at
        today = datetime.fromtimestamp(at, zone).date()
        for offset in range(8):
            day = today + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            start, end = self._span(day, zone)
            if end > at:
                candidate = max(start, at)
                if self.is_open(candidate, zone):
                    return candidate
                # A DST gap can swallow the exact start: step to the first open minute.
                for minute in range(1, 180):
                    probe = candidate + 60 * minute
                    if probe >= end:
                        break
                    if self.is_open(probe, zone):
                        return probe
        return None
