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
