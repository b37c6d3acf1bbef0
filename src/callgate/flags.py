"""Click flag parsers shared by the commands (serve, plan, simulate, loadtest).

Every numeric flag is finite: ``nan`` and ``inf`` pass a plain range check (every
comparison with NaN is false), so they are refused here, naming the flag (exit 2).
Durations go through the one parser stack files use (:mod:`callgate.durations`).
"""

from __future__ import annotations

import math
from typing import Any

import click

from callgate.durations import ACCEPTED, parse_duration


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and the infinities."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


def finite(min: float | None = None, max: float | None = None, *, min_open: bool = False,
           max_open: bool = False) -> FiniteFloatRange:
    """A finite float flag type within [min, max] (bounds open when said so)."""
    return FiniteFloatRange(min, max, min_open=min_open, max_open=max_open)


def duration_flag(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A duration flag above zero (``"3m"``, ``"1m30s"``, ``"180"`` seconds) in seconds."""
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
