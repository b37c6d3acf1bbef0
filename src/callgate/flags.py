"""Click flag parsers shared by the commands (plan, simulate, loadtest)."""

from __future__ import annotations

import click

from callgate.durations import ACCEPTED, parse_duration


def duration_flag(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A duration flag above zero (``"3m"``, ``"20s"``, ``"250ms"``, seconds) in seconds."""
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: {exc}") from None
    if seconds <= 0:
        raise click.BadParameter(f"{value!r}: expected a duration above zero ({ACCEPTED})")
    return seconds
