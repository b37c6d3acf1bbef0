"""Calling hours in the callee's time zone: end exclusive, all day, days, daylight saving."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from callgate.dialer.hours import CallingHours, parse_hours

NY = ZoneInfo("America/New_York")
WEEKDAYS = frozenset(range(5))


def _at(text: str, zone: ZoneInfo = NY) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def test_the_end_is_exclusive() -> None:
    """09:00-20:00 allows 19:59:59 and not 20:00:00."""
    hours = CallingHours(*parse_hours("09:00-20:00"), WEEKDAYS)
    assert hours.is_open(_at("2026-03-04T19:59:59"), NY)
    assert not hours.is_open(_at("2026-03-04T20:00:00"), NY)
    assert hours.is_open(_at("2026-03-04T09:00:00"), NY)


def test_all_day_is_every_second() -> None:
    """00:00-24:00 is open at midnight and one second before the next."""
    hours = CallingHours(*parse_hours("00:00-24:00"), frozenset(range(7)))
    assert hours.is_open(_at("2026-03-04T00:00:00"), NY)
    assert hours.is_open(_at("2026-03-04T23:59:59"), NY)


def test_next_open_skips_the_night_and_the_weekend() -> None:
    """Friday 20:30 in New York opens next on Monday 09:00 New York time."""
    hours = CallingHours(*parse_hours("09:00-20:00"), WEEKDAYS)
    assert hours.next_open(_at("2026-03-06T20:30:00"), NY) == _at("2026-03-09T09:00:00")
    assert hours.next_open(_at("2026-03-04T07:00:00"), NY) == _at("2026-03-04T09:00:00")


def test_next_open_follows_daylight_saving() -> None:
    """On the day clocks go forward, 09:00 local is 13:00 UTC, not 14:00."""
    hours = CallingHours(*parse_hours("09:00-20:00"), frozenset(range(7)))
    opened = hours.next_open(_at("2026-03-08T01:00:00"), NY)
    assert opened is not None
    assert datetime.fromtimestamp(opened, ZoneInfo("UTC")).hour == 13


@pytest.mark.parametrize("text", ["9:00-17:00", "17:00-09:00", "09:00-24:30", "25:00-26:00",
                                  "09:00-09:00"])
def test_bad_hours_say_what_is_accepted(text: str) -> None:
    """Malformed, reversed or impossible spans are refused with the accepted format."""
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        parse_hours(text)
