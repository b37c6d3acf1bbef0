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


def duration_or_zero_flag(ctx: click.Context, param: click.Parameter,
                          value: str | None) -> float | None:
    """A duration flag that may be zero (``--answer-within 0s``: answered without waiting)."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: {exc}") from None


def patience_flag(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Mean patience on hold: a duration (``0s``: hangs up at once) or ``inf``/``forever``."""
    if value is not None and value.strip().lower() in ("inf", "forever"):
        return float("inf")
    return duration_or_zero_flag(ctx, param, value)
