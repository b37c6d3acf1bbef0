"""``callgate dial``: a thin edge over :class:`~callgate.dialer.scheduler.Dialer`.

It reads the stack and the campaign (every problem listed with file, line and column,
exit 2, nothing dialled), opens the gate in-process on ``--store`` (the serving gates'
store, so their caps are shared) or, with ``--simulate``, on a fresh memory store in
virtual time, opens the state file, dials, and prints a summary (``--json``) or shows a
live view while it runs on a terminal. The ``cli`` group adds it with
``cli.add_command(dial)``.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from callgate.clock import system_clock
from callgate.config import CONFIG_ENV, load_stack
from callgate.dialer.campaign import CampaignError, load_campaign
from callgate.dialer.events import EventLog
from callgate.dialer.ledger import Ledger, LedgerError
from callgate.dialer.placers import PLACERS, PlacerError, make_placer
from callgate.dialer.scheduler import (
    Dialer,
    InboundTraffic,
    Progress,
    Stopped,
    Timer,
    VirtualTimer,
    WallTimer,
)
from callgate.errors import ConfigError, StoreError
from callgate.flags import duration_flag, finite
from callgate.gate import Gate
from callgate.stores import Store, open_shared_store
from callgate.stores.memory import MemoryStore
from callgate.testing import FakeClock


def _start(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected ISO 8601 with a UTC offset, e.g. "
                                 "2026-03-02T09:00:00+00:00") from None
    if moment.tzinfo is None:
        raise click.BadParameter(f"{value!r}: give a UTC offset, e.g. "
                                 "2026-03-02T09:00:00+00:00")
    return moment.timestamp()


@click.command("dial")
@click.option("--config", "config", envvar=CONFIG_ENV, show_envvar=True, metavar="PATH",
              required=True, help="The stack file (TOML).")
@click.option("--campaign", "campaign_path", required=True, metavar="FILE",
              help="The campaign file (TOML); see the README, 'Outbound campaigns'.")
@click.option("--store", metavar="URL", envvar="CALLGATE_STORE", show_envvar=True,
              help="The serving gates' store, so their caps are shared.  [default: the "
                   "stack's [gate] store]")
@click.option("--state", "state", metavar="FILE.db",
              help="The campaign's state (SQLite): resume by running again with the same "
                   "file.  [default: ./<name>.dial.db; nothing kept with --simulate]")
@click.option("--placer", type=click.Choice(PLACERS), default="dry-run", show_default=True,
              help="What places the calls.")
@click.option("--simulate", is_flag=True,
              help="Run the whole campaign in virtual time against an in-process memory gate "
                   "on the same stack, with the dry-run placer.")
@click.option("--start", callback=_start, metavar="ISO8601",
              help="With --simulate: the virtual start time.  [default: now]")
@click.option("--inbound-calls-per-hour", type=finite(0), default=0.0,
              metavar="N", help="With --simulate: inbound calls injected on the campaign's "
                                "account (Poisson), to see reserved inbound room hold.")
@click.option("--inbound-aht", callback=duration_flag, metavar="DURATION",
              help="With --simulate: mean handle time of injected inbound calls.  "
                   "[default: the stack's [inbound] handle_time]")
@click.option("--events", "events_path", metavar="FILE.jsonl",
              help="Append one JSON line per try and per skipped contact.")
@click.option("--dry-run-log", "dry_run_log", metavar="FILE",
              help="The dry-run placer appends one line per placed call here (O_APPEND, "
                   "fsync): a record kept apart from the state file.")
@click.option("--resume", is_flag=True,
              help="Clear a pause for abandonment (after fixing its cause): dialling resumes "
                   "and the abandonment rate is counted again from now.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON at the end.")
def dial(config: str, campaign_path: str, store: str | None, state: str | None, placer: str,
         simulate: bool, start: float | None, inbound_calls_per_hour: float,
         inbound_aht: float | None, events_path: str | None, dry_run_log: str | None,
         resume: bool, as_json: bool) -> None:
    """Dial a campaign's contacts across its caller numbers, within every cap and rule.

    Contacts are called in their own calling hours and days, never without consent or on
    the do-not-call list, each try at most once even across crashes (run again with the
    same --state to resume). It helps follow calling rules; it does not certify legal
    compliance.
    """
    if not simulate and (start is not None or inbound_calls_per_hour or inbound_aht):
        raise click.UsageError("--start, --inbound-calls-per-hour and --inbound-aht need "
                               "--simulate")
    if simulate and placer != "dry-run":
        raise click.UsageError("--simulate places every call with the dry-run placer; drop "
                               f"--placer {placer}")
    try:
        stack = load_stack(config, store=store)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(2) from None
    try:
        campaign = load_campaign(campaign_path, stack)
    except CampaignError as exc:
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(2) from None
    url = stack.gate.store
    if simulate and store is not None and not store.startswith("memory://"):
        raise click.BadParameter(f"{store!r}: --simulate runs on its own memory store, so "
                                 "it never touches the serving gates' state; drop --store",
                                 param_hint="'--store'")
    if not simulate and url.startswith("memory://"):
        raise click.BadParameter(
            "memory:// is private to this process, so the serving gates would not see these "
            "calls; give their store (sqlite:///... or redis://...) or use --simulate",
            param_hint="'--store'")
    timer: Timer
    if simulate:
        clock = FakeClock(start if start is not None else time.time())
        timer = VirtualTimer(clock)
        gate_store: Store = MemoryStore(Gate.limits_for(stack))
        gate = Gate(stack, gate_store, clock, rng=random.Random(campaign.spec.dry_run.seed))
    else:
        timer = WallTimer()
        try:
            gate_store = open_shared_store(stack, Gate.limits_for(stack))
            gate = Gate(stack, gate_store, system_clock)
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            raise click.exceptions.Exit(2) from None
        except (StoreError, ValueError) as exc:
            raise click.ClickException(f"cannot open the store: {exc}") from None
    state_path = state or (":memory:" if simulate else f"{campaign.name}.dial.db")
    inbound = None
    if simulate and inbound_calls_per_hour > 0:
        numbers = tuple(n for n, s in stack.numbers.items() if s.account == campaign.spec.account)
        inbound = InboundTraffic(inbound_calls_per_hour, inbound_aht or stack.inbound.handle_time,
                                 numbers, seed=campaign.spec.dry_run.seed)
    try:
        ledger = Ledger(state_path, durable=not simulate)
    except LedgerError as exc:
        gate_store.close()
        raise click.ClickException(str(exc)) from None
    events = None
    try:
        events = EventLog(events_path) if events_path else None
        dialer_placer = make_placer(placer, campaign.spec, log=dry_run_log)
    except (OSError, PlacerError) as exc:
        ledger.close()
        gate_store.close()
        if events is not None:
            events.close()
        if isinstance(exc, PlacerError):
            click.echo(f"{exc}; nothing was dialled", err=True)
            raise click.exceptions.Exit(2) from None
        raise click.ClickException(f"cannot open {exc.filename!r}: {exc.strerror}") from None
    dialer = Dialer(campaign, gate, ledger, dialer_placer, timer, events=events,
                    inbound=inbound, resume=resume)

    def stop(signum: int, frame: object) -> None:
        dialer.stop_requested = True  # honoured between tries

    # Signal handlers can only be set from the main thread (an embedding app's thread
    # keeps its own handling).
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)
                if main}
    try:
        with _live(campaign.name, enabled=not as_json) as show:
            dialer.on_progress = show
            summary = dialer.run()
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from None
    except Stopped:
        again = "" if state_path == ":memory:" else (
            f"; run the same command again (--state {state_path}) to resume")
        click.echo(f"stopped: every try so far is recorded{again}", err=True)
        raise click.exceptions.Exit(130) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        dialer_placer.close()
        ledger.close()
        gate_store.close()
        if events is not None:
            events.close()
    summary["simulated"] = simulate
    summary["state"] = None if state_path == ":memory:" else str(Path(state_path))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _print_summary(summary, Console(highlight=False))


def _abandonment(a: dict[str, Any]) -> str:
    rate = "-" if a["rate"] is None else f"{a['rate']:.1%}"
    return f"{a['abandoned']} / {a['answered']} ({rate}; limit {a['limit']:.1%} once " \
           f"{a['min_answered']} answered)"


@contextmanager
def _live(name: str, *, enabled: bool) -> Iterator[Callable[[Progress], None] | None]:
    """A live view on stdout when it is a terminal (and not --json); else nothing."""
    console = Console()
    if not enabled or not console.is_terminal:
        yield None
        return
    with Live(console=console, auto_refresh=False, transient=False) as live:
        def show(progress: Progress) -> None:
            live.update(_view(name, progress), refresh=True)

        yield show


def _view(name: str, p: Progress) -> Group:
    table = Table(title=escape(f"callgate dial {name}"), title_justify="left")
    for column in ("done", "pending", "in call", "waiting for a window",
                   "outside calling hours", "skipped", "unknown", "ETA"):
        table.add_column(column, justify="right")
    eta = "-" if p.eta_s is None else _hms(p.eta_s)
    table.add_row(str(p.placed), str(p.pending), str(p.in_call), str(p.waiting_window),
                  str(p.outside_hours), str(p.skipped), str(p.unknown), eta)
    numbers = Table(title="calls per caller number, last hour", title_justify="left")
    numbers.add_column("caller id")
    numbers.add_column("calls", justify="right")
    for number, count in p.per_number_last_hour.items():
        numbers.add_row(number, str(count))
    holding = Table.grid()
    holding.add_row(f"held back by: {escape(p.holding or 'nothing')}")
    if p.abandonment is not None and p.abandonment.get("rate") is not None:
        a = p.abandonment
        holding.add_row(f"abandoned: {a['abandoned']} of {a['answered']} answered "
                        f"({a['rate']:.1%}; limit {a['limit']:.1%})")
    return Group(table, numbers, holding)


def _hms(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def _print_summary(summary: dict[str, Any], console: Console) -> None:
    table = Table(title=escape(f"campaign {summary['campaign']} (run {summary['run']}"
                               + (", simulated" if summary["simulated"] else "") + ")"),
                  title_justify="left")
    table.add_column("")
    table.add_column("", justify="right")
    rate = summary["calls_per_hour"]
    rows: list[tuple[str, object]] = [
        ("contacts", summary["contacts"]), ("placed", summary["placed"]),
        ("unknown (never placed again)", summary["unknown"]),
        ("skipped", f"{summary['skipped']} {summary['skip_reasons'] or ''}".strip()),
        ("pending", summary["pending"]),
        ("tries by result", ", ".join(f"{k} {v}" for k, v in
                                      sorted(summary["tries_by_result"].items())) or "-"),
        ("calls placed this run", summary["placements_this_run"]),
        ("took", _hms(summary["finished_at"] - summary["started_at"])),
        ("calls per hour", "-" if rate is None else f"{rate:,.1f}"),
        ("held back by", ", ".join(f"{k} {v}" for k, v in summary["held_back"].items())
         or "nothing"),
        ("abandoned / answered", _abandonment(summary["abandonment"])),
    ]
    if summary["paused"]:
        rows.append(("PAUSED", summary["paused"]))
    if "inbound" in summary:
        inbound = summary["inbound"]
        rows.append(("inbound offered / at once / after queue",
                     f"{inbound['offered']} / {inbound['admitted_at_once']} / "
                     f"{inbound['admitted_after_queue']}"))
    for label, value in rows:
        table.add_row(label, escape(str(value)))
    console.print(table)
