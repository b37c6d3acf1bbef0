"""``callgate simulate`` and ``callgate loadtest``: thin edges over the simulator and the tester.

They read the flags into a :class:`~callgate.sim.traffic.Traffic` (a bad value exits 2
naming the flag, the value and what is accepted), run, show a progress bar on a
terminal, and print tables, ``--json`` or an ``--html`` page. ``loadtest`` exits 1 when
it saw a silent failure or a cap violation. The ``cli`` group adds both with
``cli.add_command(...)``.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from callgate.client import GateProtocolError, GateUnavailableError
from callgate.config import CONFIG_ENV, Stack, load_stack
from callgate.durations import parse_duration
from callgate.errors import ConfigError
from callgate.flags import duration_flag, finite
from callgate.planning.traffic_profile import HourlyProfile, ProfileError, load_profile
from callgate.sim.loadtest import LoadOptions, LoadTest
from callgate.sim.report import MissingExtraError, print_report, to_html, to_json
from callgate.sim.results import RunResult
from callgate.sim.scopes import ScopeMap
from callgate.sim.simulate import Simulator
from callgate.sim.traffic import HANDLE_DISTS, HandleDist, KeyFault, Traffic, numbers_for
from callgate.sim.transport import read_usage

F = TypeVar("F", bound=Callable[..., Any])
_FAULT = re.compile(
    r"^(?P<provider>[^:@\s]+):(?P<key>[^:@\s]+)@(?P<start>[^+\s]+)\+(?P<length>\S+)$")
_FRACTION = finite(0, 1)
_POSITIVE = finite(0, min_open=True)


# flag parsing ---------------------------------------------------------------------------


def _patience(ctx: click.Context, param: click.Parameter, value: str) -> float:
    if value.strip().lower() in ("none", "inf", "forever"):
        return math.inf
    seconds = duration_flag(ctx, param, value)
    assert seconds is not None
    return seconds


def _faults(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
            ) -> tuple[tuple[str, str, float, float], ...]:
    out = []
    for value in values:
        match = _FAULT.match(value)
        try:
            if match is None:
                raise ValueError("wrong shape")
            start, length = parse_duration(match["start"]), parse_duration(match["length"])
            if length <= 0:
                raise ValueError("the length must be above zero")
        except ValueError as exc:
            raise click.BadParameter(
                f"{value!r} ({exc}): expected PROVIDER:KEY@START+LENGTH in simulated time, "
                f"e.g. openai-realtime:key-a@2h+10m", param_hint="'--fault'") from None
        out.append((match["provider"], match["key"], start, length))
    return tuple(out)


def _split(values: tuple[str, ...]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def traffic_options(command: F) -> F:
    """The flags both commands share: mix, handle times, patience, numbers, faults, output."""
    options = [
        click.option("--aht", callback=duration_flag, metavar="DURATION",
                     help="Mean handle time, e.g. 3m.  [default: the stack's [inbound] "
                          "handle_time, else 3m]"),
        click.option("--handle-dist", type=click.Choice(HANDLE_DISTS), default="exp",
                     show_default=True, help="Distribution of handle times (mean --aht)."),
        click.option("--handle-sigma", type=finite(0, 5, min_open=True), default=1.0,
                     show_default=True, help="Shape of the lognormal handle time."),
        click.option("--patience", callback=_patience, default="60s", show_default=True,
                     metavar="DURATION|none",
                     help="Mean patience (exponential) of a caller on hold."),
        click.option("--outbound-fraction", type=_FRACTION, default=0.0, show_default=True,
                     help="Share of calls that are outbound (they retry instead of queueing)."),
        click.option("--numbers", "numbers", multiple=True, metavar="+E164,...",
                     help="Numbers the calls hit (comma-separated or repeated).  "
                          "[default: every number of the stack, uniformly]"),
        click.option("--accounts", "accounts", multiple=True, metavar="NAME,...",
                     help="Only the numbers of these accounts."),
        click.option("--die-fraction", type=_FRACTION, default=0.0, show_default=True,
                     help="Share of calls whose worker crashes mid-call and stops renewing."),
        click.option("--fault", "faults", multiple=True, callback=_faults,
                     metavar="PROVIDER:KEY@START+LENGTH",
                     help="A provider key answers 429 from START for LENGTH (simulated), "
                          "e.g. openai-realtime:key-a@2h+10m; repeatable."),
        click.option("--fault-retry-after", callback=duration_flag, default="30s",
                     show_default=True, metavar="DURATION",
                     help="The Retry-After of each 429 (the key's cooldown)."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the traffic: the same seed, the very same calls on any "
                          "stack (the gate's backoff jitter draws from a stream of its own)."),
        click.option("--json", "as_json", is_flag=True, help="Print the JSON document instead."),
        click.option("--html", "html_path", metavar="FILE",
                     help="Also write a self-contained HTML report with charts."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _rate(rate: float | None, calls_per_hour: float | None, profile: str | None,
          peak: float | None = None, aht_s: float = 180.0
          ) -> tuple[float | None, HourlyProfile | None]:
    """(calls per simulated second, None) or (None, profile) from the one volume flag given."""
    given = [flag for flag, value in (("--rate", rate), ("--calls-per-hour", calls_per_hour),
                                      ("--profile", profile), ("--peak", peak))
             if value is not None]
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} cannot be combined: give one call volume")
    if profile is not None:
        try:
            return None, load_profile(profile)
        except ProfileError as exc:
            raise click.BadParameter(str(exc), param_hint="'--profile'") from None
    if rate is not None:
        return rate, None
    if calls_per_hour is not None:
        return calls_per_hour / 3600.0, None
    if peak is not None:
        return peak / aht_s, None
    raise click.UsageError("no call volume: give one of " + ", ".join(
        ("--rate CALLS_PER_S", "--calls-per-hour N", "--profile FILE (simulate)",
         "--peak N with --aht (loadtest)")))


def _traffic(numbers: tuple[str, ...], aht_s: float, rate: float | None,
             profile: HourlyProfile | None, factor: float, opts: dict[str, Any]) -> Traffic:
    faults = tuple(KeyFault(p, k, start, length, opts["fault_retry_after"])
                   for p, k, start, length in opts["faults"])
    handle_dist: HandleDist = opts["handle_dist"]
    return Traffic(numbers=numbers, aht_s=aht_s, rate_per_s=rate, profile=profile, factor=factor,
                   handle_dist=handle_dist, lognormal_sigma=opts["handle_sigma"],
                   patience_s=opts["patience"], outbound_fraction=opts["outbound_fraction"],
                   die_fraction=opts["die_fraction"], faults=faults)


def _stack(config: str) -> Stack:
    try:
        return load_stack(config)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(2) from None


def _check_faults(stack: Stack, faults: tuple[tuple[str, str, float, float], ...]) -> None:
    for provider, key, _, _ in faults:
        pool = stack.providers.get(provider)
        if pool is None or key not in pool.keys:
            known = ", ".join(f"{name}:{k}" for name, p in stack.providers.items()
                              for k in p.keys) or "none"
            raise click.BadParameter(f"{provider}:{key} is not a key of the stack; keys: {known}",
                                     param_hint="'--fault'")


def _numbers(stack: Stack, opts: dict[str, Any]) -> tuple[str, ...]:
    try:
        return numbers_for(stack, _split(opts["numbers"]), _split(opts["accounts"]))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--numbers' / '--accounts'") from None


def _output(result: RunResult, as_json: bool, html_path: str | None) -> None:
    if html_path is not None:
        try:
            Path(html_path).write_text(to_html(result), encoding="utf-8")
        except MissingExtraError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.BadParameter(f"cannot write {html_path!r}: {exc.strerror or exc}",
                                     param_hint="'--html'") from None
    if as_json:
        click.echo(to_json(result))
    else:
        print_report(result, Console(highlight=False))
    if html_path is not None:
        click.echo(f"HTML report: {html_path}", err=as_json)


@contextmanager
def _progress(description: str, total: float) -> Iterator[Callable[[float], None]]:
    """A progress bar on stderr when it is a terminal; yields ``update(done)``."""
    console = Console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(),
                   TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                   console=console, transient=True, disable=not console.is_terminal)
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)


# simulate ---------------------------------------------------------------------------------
@click.command("simulate")
@click.option("--config", "config", envvar=CONFIG_ENV, show_envvar=True, metavar="PATH",
              required=True, help="The stack file (TOML); its store is ignored (memory).")
@click.option("--rate", type=_POSITIVE, metavar="CALLS_PER_S",
              help="Constant arrivals, calls per simulated second.")
@click.option("--calls-per-hour", type=_POSITIVE, metavar="N", help="Constant arrivals per hour.")
@click.option("--profile", metavar="FILE",
              help="Hourly profile (TOML calls = [24 numbers] or CSV hour,calls); hour 0 first.")
@click.option("--factor", type=_POSITIVE, default=1.0, show_default=True,
              help="Multiply the arrival rate (e.g. 1.5 for 1.5x the planned traffic).")
@click.option("--hours", type=_POSITIVE,
              help="Simulated hours of arrivals.  [default: 24 with --profile, else 1]")
@click.option("--warmup", callback=duration_flag, metavar="DURATION",
              help="Arrivals left out of the confidence intervals.  [default: 5% of the run "
                   "at a constant rate, none with --profile]")
@click.option("--batches", type=click.IntRange(2, 1000), default=20, show_default=True,
              help="Batches for the batch-means confidence intervals.")
@click.option("--poll-interval", callback=duration_flag, default="2s", show_default=True,
              metavar="DURATION", help="How often a queued caller polls (at most poll_timeout/2).")
@traffic_options
def simulate(config: str, rate: float | None, calls_per_hour: float | None,
             profile: str | None, factor: float, hours: float | None, warmup: float | None,
             batches: int, poll_interval: float, aht: float | None, seed: int, as_json: bool,
             html_path: str | None, **traffic: Any) -> None:  # traffic: the shared flags
    """Simulate traffic in virtual time through the real gate (memory store) and report
    every layer: peaks, time at cap, queue, retries, waits and the bottleneck."""
    base_rate, hourly = _rate(rate, calls_per_hour, profile)
    stack = _stack(config)
    _check_faults(stack, traffic["faults"])
    numbers = _numbers(stack, traffic)
    duration_s = (hours if hours is not None else 24.0 if hourly else 1.0) * 3600.0
    if warmup is None:
        warmup = 0.0 if hourly else 0.05 * duration_s
    if warmup >= duration_s:
        raise click.BadParameter(f"{warmup:g} s is not shorter than the run ({duration_s:g} s)",
                                 param_hint="'--warmup'")
    model = _traffic(numbers, aht or stack.inbound.handle_time, base_rate, hourly, factor,
                     traffic)
    with _progress("simulating", duration_s) as update:
        simulator = Simulator(stack, model, duration_s=duration_s, seed=seed,
                              poll_interval_s=poll_interval or 2.0, warmup_s=warmup,
                              batches=batches, config=config, progress=update)
        result = simulator.run()
    _output(result, as_json, html_path)


# loadtest ---------------------------------------------------------------------------------
@click.command("loadtest")
@click.option("--url", required=True, metavar="URL",
              help="The running gate (callgate serve --time-scale SPEED); traffic goes only here.")
@click.option("--token", envvar="CALLGATE_TOKEN", show_envvar=True, metavar="TOKEN",
              help="Bearer token sent with every request.")
@click.option("--config", "config", envvar=CONFIG_ENV, show_envvar=True, metavar="PATH",
              help="The gate's stack file: exact scopes per call.  [default: caps and numbers "
                   "from GET /v1/usage]")
@click.option("--rate", type=_POSITIVE, metavar="CALLS_PER_S",
              help="Arrivals per simulated second (before --factor).")
@click.option("--calls-per-hour", type=_POSITIVE, metavar="N",
              help="Arrivals per simulated hour (before --factor).")
@click.option("--peak", type=_POSITIVE, metavar="N",
              help="Planned peak concurrent calls: arrivals = N / --aht (before --factor).")
@click.option("--factor", type=_POSITIVE, default=1.5, show_default=True,
              help="Multiply the arrival rate: 1.5 tests at 1.5x the plan.")
@click.option("--duration", type=_POSITIVE, default=60.0, show_default=True, metavar="SECONDS",
              help="Wall seconds of arrivals.")
@click.option("--speed", type=_POSITIVE, default=1.0, show_default=True, metavar="K",
              help="Simulated seconds per wall second; run the gate with --time-scale K.")
@click.option("--grace", type=finite(0), default=30.0, show_default=True,
              metavar="SECONDS", help="Wall seconds to let calls in flight finish at the end.")
@click.option("--max-in-flight", type=click.IntRange(1), default=500, show_default=True,
              help="Most calls in flight at once; arrivals beyond it are dropped and counted.")
@click.option("--timeout", type=_POSITIVE, default=5.0, show_default=True, metavar="SECONDS",
              help="Wall seconds before a request counts as a silent failure.")
@traffic_options
def loadtest(url: str, token: str | None, config: str | None, rate: float | None,
             calls_per_hour: float | None, peak: float | None, factor: float, duration: float,
             speed: float, grace: float, max_in_flight: int, timeout: float, aht: float | None,
             seed: int, as_json: bool, html_path: str | None,
             **traffic: Any) -> None:  # traffic: the flags of traffic_options
    """Load-test a running gate over HTTP at --factor times the traffic, time-compressed by
    --speed; exits 1 if any request got no decision or any cap was exceeded."""
    if not re.match(r"^https?://", url):
        raise click.BadParameter(f"{url!r}: expected http://host:port or https://host:port",
                                 param_hint="'--url'")
    url = url.rstrip("/")
    stack = _stack(config) if config else None
    if stack is None and traffic["accounts"]:
        raise click.UsageError("--accounts needs --config (which numbers belong to which account)")
    if peak is not None and aht is None:
        raise click.UsageError("--peak needs --aht: the arrival rate is peak / aht")
    aht_s = aht or (stack.inbound.handle_time if stack else 180.0)
    base_rate, _ = _rate(rate, calls_per_hour, None, peak, aht_s)
    options = LoadOptions(url=url, token=token, speed=speed, duration_s=duration,
                          grace_s=grace, max_in_flight=max_in_flight, seed=seed,
                          timeout_s=timeout)
    result = asyncio.run(_loadtest(stack, config, options, aht_s, base_rate, factor, traffic))
    _output(result, as_json, html_path)
    found = result.findings
    assert found is not None
    if found.silent_failures or found.cap_violations:
        raise click.exceptions.Exit(1)


async def _loadtest(stack: Stack | None, config: str | None, options: LoadOptions, aht_s: float,
                    rate: float | None, factor: float, opts: dict[str, Any]) -> RunResult:
    if stack is not None:
        _check_faults(stack, opts["faults"])
        scopes, ttl_s = ScopeMap.of_stack(stack), stack.gate.lease_ttl
        numbers = _numbers(stack, opts)
    else:
        try:
            usage = await read_usage(options.url, options.token, options.timeout_s)
        except GateUnavailableError as exc:
            hint = " (is `callgate serve` running there?)" if exc.status_code is None else ""
            raise click.ClickException(f"{exc}{hint}") from None
        except GateProtocolError as exc:
            raise click.ClickException(str(exc)) from None
        scopes = ScopeMap.of_usage(usage["layers"])
        ttl = usage.get("ttl_s")
        ttl_s = float(ttl) if isinstance(ttl, int | float) and ttl > 0 else 30.0
        wanted = _split(opts["numbers"])
        unknown = sorted(set(wanted) - set(scopes.numbers))
        if unknown:
            raise click.BadParameter(f"{unknown} are not numbers of the gate; it has "
                                     f"{sorted(scopes.numbers)}", param_hint="'--numbers'")
        numbers = tuple(wanted) or scopes.numbers
        if not numbers:
            raise click.ClickException(f"{options.url}/v1/usage lists no number to call")
    model = _traffic(numbers, aht_s, rate, None, factor, opts)
    with _progress("load testing", 1.0) as update:
        test = LoadTest(model, scopes, options, ttl_s=ttl_s, config=config,
                        progress=lambda done, in_flight: update(done))
        return await test.run()
