"""``callgate plan``: how many concurrent calls to provision, and what it takes to get there.

A thin edge over :func:`callgate.planning.plan.plan`: it reads the stack and the volume,
checks every flag (a bad value exits 2 naming the flag, the value and what is accepted),
and prints the report as tables, ``--json`` or an ``--html`` page. The ``cli`` group adds
it with ``cli.add_command(plan)``.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
from rich.console import Console

from callgate.config import CONFIG_ENV, E164, load_stack
from callgate.errors import (
    ConfigError,
    MissingExtraError,
    UnknownAccountError,
    UnknownNumberError,
)
from callgate.flags import duration_flag, duration_or_zero_flag, finite, patience_flag
from callgate.planning.path import Direction
from callgate.planning.plan import Targets, Volume
from callgate.planning.plan import plan as make_plan
from callgate.planning.report import print_report, to_html, to_json
from callgate.planning.traffic_profile import ProfileError, load_profile

_FRACTION = finite(0, 1, min_open=True, max_open=True)
_CALLS = finite(0, min_open=True)




def _volume(calls_per_day: float | None, calls_per_hour: float | None, profile: str | None,
            direction: str, campaign: float | None) -> Volume:
    given = [flag for flag, value in (("--calls-per-day", calls_per_day),
                                      ("--calls-per-hour", calls_per_hour),
                                      ("--profile", profile)) if value is not None]
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} cannot be combined: give one call volume")
    if profile is not None:
        try:
            return Volume(profile=load_profile(profile))
        except ProfileError as exc:
            raise click.BadParameter(str(exc), param_hint="'--profile'") from None
    if calls_per_day is not None:
        return Volume(calls_per_day=calls_per_day)
    if calls_per_hour is not None:
        return Volume(calls_per_hour=calls_per_hour)
    if direction == "outbound" and campaign is not None:
        return Volume(calls_per_hour=campaign)
    raise click.UsageError("no call volume: give --calls-per-day N, --calls-per-hour N or "
                           "--profile FILE (outbound: or --campaign-calls-per-hour N)")


@click.command("plan")
@click.option("--config", "config", envvar=CONFIG_ENV, show_envvar=True, metavar="PATH",
              required=True, help="The stack file (TOML).")
@click.option("--calls-per-day", type=_CALLS, metavar="N",
              help="Calls a day; the busy hour is taken as 10% of them.")
@click.option("--calls-per-hour", type=_CALLS, metavar="N",
              help="Calls in the busy hour.")
@click.option("--profile", metavar="FILE",
              help="Hourly profile: TOML calls = [24 numbers] or CSV hour,calls.")
@click.option("--number", metavar="+E164",
              help="Plan one number's calls (outbound: its account's caller pool).  "
                   "[default: the whole stack]")
@click.option("--account", metavar="NAME",
              help="Plan one account's calls on its own numbers, plan, trunks and pools.")
@click.option("--direction", type=click.Choice(["inbound", "outbound"]), default="inbound",
              show_default=True)
@click.option("--aht", callback=duration_flag, metavar="DURATION",
              help="Average handle time, e.g. 3m.  [default: the stack's [inbound] handle_time]")
@click.option("--peak-factor", type=finite(min=1), default=2.5, show_default=True,
              help="Peak over the average concurrency, for the rule of thumb and peak arrivals.")
@click.option("--blocking", type=_FRACTION, default=0.01, show_default=True,
              help="Fraction of callers that may find every line busy (Erlang B).")
@click.option("--service-level", type=_FRACTION, default=0.8, show_default=True,
              help="Fraction of callers answered within --answer-within (Erlang C and A).")
@click.option("--answer-within", callback=duration_or_zero_flag, default="20s",
              show_default=True, metavar="DURATION",
              help="The service level's answer time; 0s: answered without waiting.")
@click.option("--max-abandon", type=_FRACTION, default=0.05, show_default=True,
              help="Fraction of callers that may hang up on hold (Erlang A).")
@click.option("--patience", callback=patience_flag, default="60s", show_default=True,
              metavar="DURATION|inf",
              help="Callers' mean patience on hold (Erlang A); 0s: they hang up at once "
                   "(Erlang B), inf: never (Erlang C).")
@click.option("--campaign-calls-per-hour", type=_CALLS, metavar="N",
              help="Outbound: count the caller numbers a campaign of this rate needs.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document instead.")
@click.option("--html", "html_path", metavar="FILE",
              help="Also write a self-contained HTML report with the demand chart.")
def plan(config: str, calls_per_day: float | None, calls_per_hour: float | None,
         profile: str | None, number: str | None, account: str | None, direction: Direction,
         aht: float | None,
         peak_factor: float, blocking: float, service_level: float, answer_within: float,
         max_abandon: float, patience: float, campaign_calls_per_hour: float | None,
         as_json: bool, html_path: str | None) -> None:
    """Plan capacity: Little's Law, the peak, Erlang B/C/A, the lowest cap, the cheapest fix."""
    if campaign_calls_per_hour is not None and direction != "outbound":
        raise click.UsageError("--campaign-calls-per-hour applies to --direction outbound")
    if number is not None and account is not None:
        raise click.UsageError("--number and --account cannot be combined: plan one of them")
    if number is not None and not re.fullmatch(E164, number):
        raise click.BadParameter(f"{number!r} is not E.164: '+' then up to 15 digits, "
                                 f"e.g. +14155550100", param_hint="'--number'")
    volume = _volume(calls_per_day, calls_per_hour, profile, direction, campaign_calls_per_hour)
    try:
        stack = load_stack(config)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(2) from None
    targets = Targets(blocking=blocking, service_level=service_level,
                      answer_within_s=answer_within, patience_s=patience,
                      max_abandon=max_abandon)
    try:
        result = make_plan(stack, volume, aht or stack.inbound.handle_time, peak_factor,
                           targets, direction, number, campaign_calls_per_hour, account)
    except UnknownNumberError as exc:
        raise click.BadParameter(str(exc), param_hint="'--number'") from None
    except UnknownAccountError as exc:
        raise click.BadParameter(str(exc), param_hint="'--account'") from None
    if html_path is not None:
        try:
            Path(html_path).write_text(to_html(result, config), encoding="utf-8")
        except MissingExtraError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.BadParameter(f"cannot write {html_path!r}: {exc.strerror or exc}",
                                     param_hint="'--html'") from None
    if as_json:
        click.echo(to_json(result, config))
    else:
        print_report(result, config, Console(highlight=False))
    if html_path is not None:
        click.echo(f"HTML report: {html_path}", err=as_json)
