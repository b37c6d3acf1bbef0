"""The live view shows the campaign's state, per-number calls, what holds it back, an ETA."""

from __future__ import annotations

from rich.console import Console

from callgate.dialer.command import _view
from callgate.dialer.scheduler import Progress


def test_the_live_view_names_every_count_and_the_holding_cap() -> None:
    """Every figure of a progress snapshot appears in the rendered view."""
    progress = Progress(now=0.0, total=100, placed=40, unknown=1, skipped=5, pending=54,
                        in_call=3, waiting_window=7, outside_hours=11,
                        per_number_last_hour={"+14155550100": 29},
                        holding="window +14155550100:outbound:1h (rate_window)", eta_s=3725)
    console = Console(record=True, width=160)
    console.print(_view("spring", progress))
    text = console.export_text()
    for needle in ("waiting for a window", "outside calling hours", "+14155550100",
                   "29", "rate_window", "1h02m05s", "54", "11"):
        assert needle in text, needle


def test_a_paused_campaign_s_view_says_why_and_shows_the_abandon_rate() -> None:
    """A pause for abandonment names itself and the rate against the limit."""
    reason = "abandonment rate 4.6% >= abandon_limit 3.0% (5 of 108 answered calls)"
    progress = Progress(now=0.0, total=10, placed=4, unknown=0, skipped=0, pending=6,
                        in_call=0, waiting_window=0, outside_hours=0, per_number_last_hour={},
                        holding=f"paused: {reason}", eta_s=None, paused=reason,
                        abandonment={"answered": 108, "abandoned": 5, "rate": 0.0463,
                                     "limit": 0.03, "min_answered": 100})
    console = Console(record=True, width=200)
    console.print(_view("spring", progress))
    text = console.export_text()
    assert f"held back by: paused: {reason}" in text
    assert "abandoned: 5 of 108 answered (4.6%; limit 3.0%)" in text
