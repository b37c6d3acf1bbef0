"""A capacity plan as terminal tables (rich), JSON, or one self-contained HTML page.

The three views show the same sections, built once by :func:`sections`.

JSON document (``callgate plan --json``; :func:`to_document`)
---------------------------------------------------------------
Stable keys, version 1. Units: concurrency in calls, rates in calls per hour (``_per_hour``)
or per second (``_per_s``), times in seconds (``_s``), costs per month in the currency of
``[costs]``. Any infinite value (an unstable queue's wait) is ``null``.

- ``version`` (1), ``config`` (the stack path), ``direction`` (``inbound``/``outbound``),
  ``number`` (the planned number, else ``null``), ``account`` (the planned account with
  ``--account``, else ``null``; both ``null``: the whole stack), ``aht_s``.
- ``volume``: ``kind`` (``per_day``, ``per_hour``, ``profile``), ``calls_per_day`` (the
  day's calls; ``null`` for ``per_hour``), ``calls_per_hour`` (``per_hour`` only, else
  ``null``), ``description`` (the profile's), ``hourly_calls`` (24 numbers: the profile,
  a day-shaped curve for ``per_day``, flat for ``per_hour``), ``average_calls_per_hour``,
  ``busy_hour`` (0..23 from a profile, else ``null``), ``busy_hour_calls``,
  ``busy_hour_ratio`` (the busy hour's share of the day: 0.1 assumed for ``per_day``, the
  profile's max / total, ``null`` for ``per_hour``).
- ``littles_law``: ``average_concurrency`` (average calls/h / 3600 x AHT),
  ``busy_hour_concurrency`` (the busy hour's traffic in erlangs).
- ``peak``: ``peak_factor``, ``rule_of_thumb`` (average concurrency x peak factor),
  ``rule_of_thumb_slots`` (rounded up), ``peak_arrivals_per_s`` (busy-hour calls x peak
  factor / 3600).
- ``targets``: ``blocking``, ``service_level``, ``answer_within_s`` (0: answered without
  waiting), ``patience_s`` (0: callers hang up at once; ``null``: not set, or endless),
  ``patience_endless`` (true for ``--patience inf``), ``max_abandon`` (``null`` when not set).
- ``erlang``: ``traffic_erlangs``, ``lines_for_blocking`` (Erlang B),
  ``agents_for_service_level`` (Erlang C), ``agents_for_service_level_abandon`` (Erlang A),
  ``agents_for_abandon`` (Erlang A); ``null`` when the target is not set or, outbound,
  does not apply (outbound never holds a caller).
- ``requirement`` (concurrent calls to provision: the largest of the rule of thumb and the
  Erlang figures), ``requirement_basis`` (``erlang_b``, ``erlang_c``,
  ``erlang_a_service_level``, ``erlang_a_abandon`` or ``rule_of_thumb``), ``explanation``.
- ``path``: one object per layer along the call's path, in path order: ``layer``
  (``number``, ``trunk``, ``account``, ``provider``, ``resource``, ``window``), ``scope``,
  ``cap``, ``note``, ``headroom`` (cap - requirement).
- ``bottleneck``: ``layer``, ``scope``, ``cap``, ``note`` of the lowest cap;
  ``headroom`` (bottleneck cap - requirement), ``shortfall`` (max(0, -headroom)).
- ``grade_at_bottleneck``: the busy hour on the bottleneck's cap alone, one object per
  queueing model (``null`` where it does not apply: outbound never holds a caller, and
  Erlang A needs a patience):

  - ``slots``;
  - ``erlang_b`` (no queue: a caller who finds every slot busy is lost): ``blocking``;
  - ``erlang_c`` (callers wait as long as it takes): ``p_wait``, ``service_level``
    (answered within ``answer_within_s``), ``asa_s`` (mean wait over all callers;
    ``null`` when unbounded), ``occupancy``, ``stable`` (false: slots <= traffic, the
    queue grows without bound);
  - ``erlang_a`` (callers hang up after a mean ``patience_s``): ``patience_s``,
    ``p_wait``, ``service_level`` (share of ALL callers answered within
    ``answer_within_s``), ``asa_answered_s`` (mean wait of the answered; ``null`` when
    unbounded), ``mean_wait_all_s``, ``p_abandon``, ``occupancy``;
  - kept from before, each named for its model: ``blocking`` (Erlang B), ``p_wait``,
    ``service_level``, ``asa_s`` (Erlang C), ``p_abandon`` (Erlang A).
- ``rates``: ``scope``, ``limit``, ``period_s``, ``limit_per_s``, ``peak_per_s``, ``ok``
  for every ``max_cps`` and window on the path.
- ``fix``: ``needed`` (a layer is below the requirement), ``changes`` (cheapest first:
  ``layer``, ``scope``, ``gap``, ``action``, ``monthly_cost`` (``null``: no price in
  ``[costs]``), ``note``), ``total_monthly_cost`` (sum of the priced changes), ``complete``
  (every change priced), ``unpriced`` (the scopes without a price).
- ``accounts`` (whole-stack plans; ``[]`` for a number or an account): each account's own
  path, which the stack-wide sums hide: ``account``, ``numbers``, ``lowest`` (``layer``,
  ``scope``, ``cap``, ``note`` of its lowest cap), ``below_stack_bottleneck`` (its lowest
  cap is under the stack-wide one), ``command`` (its own plan: ``callgate plan --account``).
- ``campaign`` (outbound with ``--campaign-calls-per-hour``, else ``null``):
  ``target_calls_per_hour``, ``checks`` (``limit``, ``per_number_calls_per_hour``,
  ``numbers_needed``), ``numbers_needed``, ``numbers_current``, ``extra_numbers``,
  ``extra_monthly_cost``, ``concurrency`` (calls/h / 3600 x AHT), ``carriers`` (every
  other layer on the path: ``layer``, ``scope``, ``cap``, ``needed`` (the concurrency in
  whole calls), ``ok``), ``blocked_by`` (the scopes of the carriers that cannot carry it).
- ``loadtest_command`` (a load test at 1.5x the requirement), ``warnings`` (strings).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from callgate.durations import format_duration
from callgate.errors import PLAN_EXTRA_HINT
from callgate.planning.chart import demand_chart_svg
from callgate.planning.plan import PlanResult, seconds_text

INSTALL_HINT = PLAN_EXTRA_HINT


# --------------------------------------------------------------------------------- JSON


def _clean(value: Any) -> Any:
    """The document with every infinite or NaN float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def account_command(result: PlanResult, config: str, account: str) -> str:
    """The ``callgate plan`` line for one account's own plan (give it its own volume)."""
    direction = "" if result.direction == "inbound" else " --direction outbound"
    return (f"callgate plan --config {config} --account {account}{direction} "
            f"--calls-per-hour N --aht {format_duration(result.aht_s)}")


def _grade_document(result: PlanResult) -> dict[str, Any]:
    g = result.grade
    c, a = g.erlang_c, g.erlang_a
    return {
        "slots": g.slots,
        "erlang_b": {"blocking": g.blocking},
        "erlang_c": None if c is None else {
            "p_wait": c.p_wait, "service_level": c.service_level, "asa_s": c.asa_s,
            "occupancy": c.occupancy, "stable": c.stable},
        "erlang_a": None if a is None else {
            "patience_s": g.patience_s, "p_wait": a.p_wait,
            "service_level": a.service_level_answered, "asa_answered_s": a.asa_answered_s,
            "mean_wait_all_s": a.mean_wait_all_s, "p_abandon": a.p_abandon,
            "occupancy": a.occupancy},
        "blocking": g.blocking,
        "p_wait": g.p_wait,
        "service_level": g.service_level,
        "asa_s": g.asa_s,
        "p_abandon": g.p_abandon,
    }


def to_document(result: PlanResult, config: str) -> dict[str, Any]:
    """The JSON document of a plan (keys in the module docstring)."""
    demand, erlang, targets, fix = result.demand, result.erlang, result.targets, result.fix
    hourly = list(demand.hourly_calls)
    document = {
        "version": 1,
        "config": config,
        "direction": result.direction,
        "number": result.number,
        "account": result.account,
        "aht_s": float(result.aht_s),
        "volume": {
            "kind": result.volume_kind,
            "calls_per_day": demand.calls_per_day,
            "calls_per_hour": demand.busy_hour_calls if result.volume_kind == "per_hour" else None,
            "description": result.volume_description,
            "hourly_calls": hourly,
            "average_calls_per_hour": demand.average_calls_per_hour,
            "busy_hour": demand.busy_hour,
            "busy_hour_calls": demand.busy_hour_calls,
            "busy_hour_ratio": demand.busy_hour_ratio,
        },
        "littles_law": {
            "average_concurrency": demand.average_concurrency,
            "busy_hour_concurrency": demand.busy_hour_concurrency,
        },
        "peak": {
            "peak_factor": demand.peak_factor,
            "rule_of_thumb": demand.rule_of_thumb,
            "rule_of_thumb_slots": result.rule_of_thumb_slots,
            "peak_arrivals_per_s": demand.peak_arrivals_per_s,
        },
        "targets": {
            "blocking": targets.blocking,
            "service_level": targets.service_level,
            "answer_within_s": targets.answer_within_s,
            "patience_s": targets.patience_s,
            "patience_endless": targets.patience_s == math.inf,
            "max_abandon": targets.max_abandon,
        },
        "erlang": {
            "traffic_erlangs": erlang.traffic,
            "lines_for_blocking": erlang.lines_for_blocking,
            "agents_for_service_level": erlang.agents_for_service_level,
            "agents_for_service_level_abandon": erlang.agents_for_service_level_abandon,
            "agents_for_abandon": erlang.agents_for_abandon,
        },
        "requirement": result.requirement,
        "requirement_basis": result.requirement_basis,
        "explanation": result.explanation,
        "path": [{"layer": row.layer, "scope": row.scope, "cap": row.cap, "note": row.note,
                  "headroom": row.cap - result.requirement} for row in result.path],
        "bottleneck": {"layer": result.bottleneck.layer, "scope": result.bottleneck.scope,
                       "cap": result.bottleneck.cap, "note": result.bottleneck.note},
        "headroom": result.headroom,
        "shortfall": result.shortfall,
        "grade_at_bottleneck": _grade_document(result),
        "accounts": [{"account": a.account, "numbers": a.numbers,
                      "lowest": {"layer": a.lowest.layer, "scope": a.lowest.scope,
                                 "cap": a.lowest.cap, "note": a.lowest.note},
                      "below_stack_bottleneck": a.lowest.cap < result.bottleneck.cap,
                      "command": account_command(result, config, a.account)}
                     for a in result.accounts],
        "rates": [{"scope": r.scope, "limit": r.limit, "period_s": r.period_s,
                   "limit_per_s": r.limit_per_s, "peak_per_s": r.peak_per_s, "ok": r.ok}
                  for r in result.rates],
        "fix": {
            "needed": bool(fix.changes),
            "changes": [{"layer": c.layer, "scope": c.scope, "gap": c.gap, "action": c.action,
                         "monthly_cost": c.monthly_cost, "note": c.note} for c in fix.changes],
            "total_monthly_cost": fix.total_monthly_cost,
            "complete": fix.complete,
            "unpriced": [c.scope for c in fix.unpriced],
        },
        "campaign": None,
        "loadtest_command": result.loadtest_command(config),
        "warnings": list(result.warnings),
    }
    if result.campaign is not None:
        campaign = result.campaign
        document["campaign"] = {
            "target_calls_per_hour": campaign.target_calls_per_hour,
            "checks": [{"limit": c.limit, "per_number_calls_per_hour": c.per_number_calls_per_hour,
                        "numbers_needed": c.numbers_needed} for c in campaign.checks],
            "numbers_needed": campaign.numbers_needed,
            "numbers_current": campaign.numbers_current,
            "extra_numbers": campaign.extra_numbers,
            "extra_monthly_cost": campaign.extra_monthly_cost,
            "concurrency": campaign.concurrency,
            "carriers": [{"layer": c.layer, "scope": c.scope, "cap": c.cap,
                          "needed": c.needed, "ok": c.ok} for c in campaign.carriers],
            "blocked_by": [c.scope for c in campaign.blocked_by],
        }
    cleaned: dict[str, Any] = _clean(document)
    return cleaned


def to_json(result: PlanResult, config: str) -> str:
    """The JSON document as text (strict JSON: no Infinity, no NaN)."""
    return json.dumps(to_document(result, config), indent=2, allow_nan=False)


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class Section:
    """One table of the report: the same content in the terminal and in HTML."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = ()
    marked: int | None = None
    """Index of the row to stand out (the bottleneck, the requirement)."""


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _calls(value: float) -> str:
    return f"{value:,.0f}" if value == round(value) else f"{value:,.1f}"


def _money(value: float | None) -> str:
    return "no price in [costs]" if value is None else f"{value:,.2f}"


def _wait(value: float | None) -> str:
    return "unbounded" if value is None or not math.isfinite(value) else f"{value:.1f}s"


def _scope_title(result: PlanResult) -> str:
    where = (result.number or (f"account {result.account}" if result.account else None)
             or "the whole stack")
    return f"{result.direction} calls, {where}, AHT {format_duration(result.aht_s)}"


def _demand_section(result: PlanResult) -> Section:
    d = result.demand
    aht = format_duration(result.aht_s)
    if result.volume_kind == "per_hour":
        volume = f"{_calls(d.busy_hour_calls)} calls/h (taken as the busy hour)"
    elif result.volume_kind == "per_day":
        volume = (f"{_calls(d.calls_per_day or 0.0)} calls/day; no profile, so the busy "
                  f"hour is assumed to carry {d.busy_hour_ratio:.0%} of them "
                  f"(busy_hour_ratio {d.busy_hour_ratio:g})")
    else:
        volume = (f"profile: {_calls(d.calls_per_day or 0.0)} calls/day; busy hour "
                  f"{d.busy_hour:02d}:00 carries {_pct(d.busy_hour_ratio)} of them")
    rows = (
        ("volume", volume),
        ("average concurrency (Little)",
         f"{_calls(d.average_calls_per_hour)} calls/h x {aht} = {d.average_concurrency:.2f}"),
        ("busy hour (Little)",
         f"{_calls(d.busy_hour_calls)} calls/h x {aht} = {d.busy_hour_concurrency:.2f} erlangs"),
        ("rule-of-thumb ceiling",
         f"{d.average_concurrency:.2f} x {d.peak_factor:g} = {d.rule_of_thumb:.2f} "
         f"-> {result.rule_of_thumb_slots}"),
        ("peak arrivals",
         f"{_calls(d.busy_hour_calls)} x {d.peak_factor:g} / 3600 = "
         f"{d.peak_arrivals_per_s:.3f} calls/s"),
    )
    return Section(f"Demand: {_scope_title(result)}", ("measure", "value"), rows)


def _requirement_section(result: PlanResult) -> Section:
    e, t = result.erlang, result.targets
    answer = seconds_text(t.answer_within_s)
    patience = seconds_text(t.patience_s)
    candidates = [
        ("Erlang B (lost calls)", f"<= {_pct(t.blocking)} blocked", e.lines_for_blocking),
        ("Erlang C (callers wait)", f"{_pct(t.service_level)} within {answer}",
         e.agents_for_service_level),
        (f"Erlang A (patience {patience})", f"{_pct(t.service_level)} within {answer}",
         e.agents_for_service_level_abandon),
        (f"Erlang A (patience {patience})", f"<= {_pct(t.max_abandon)} hang up",
         e.agents_for_abandon),
        ("rule of thumb", f"average x {result.demand.peak_factor:g}",
         result.rule_of_thumb_slots),
    ]
    rows = [(model, target, str(slots)) for model, target, slots in candidates
            if slots is not None]
    rows.append(("requirement", f"the largest ({result.requirement_basis})",
                 str(result.requirement)))
    return Section(
        f"Slots needed at the busy hour ({e.traffic:.2f} erlangs)",
        ("model", "target", "slots"), tuple(rows), (result.explanation,),
        marked=len(rows) - 1,
    )


def _path_section(result: PlanResult) -> Section:
    rows = []
    marked = None
    for index, row in enumerate(result.path):
        if row is result.bottleneck:
            marked = index
        rows.append((row.layer, row.scope, str(row.cap), f"{row.cap - result.requirement:+d}",
                     row.note + ("  <- bottleneck" if row is result.bottleneck else "")))
    neck = result.bottleneck
    verdict = (f"Headroom: {result.headroom} concurrent calls above the requirement."
               if result.headroom >= 0 else
               f"Shortfall: {result.shortfall} concurrent calls (requirement "
               f"{result.requirement}, bottleneck {neck.layer} {neck.scope} at {neck.cap}).")
    return Section(
        f"Capacity along the call's path (requirement {result.requirement})",
        ("layer", "scope", "cap", "headroom", "note"), tuple(rows),
        (f"Lowest cap: {neck.layer} {neck.scope}, {neck.cap} concurrent calls.", verdict),
        marked=marked,
    )


def _grade_section(result: PlanResult) -> Section:
    """The busy hour on the bottleneck's slots, each model's figures under its own name."""
    g, t = result.grade, result.targets
    answer = seconds_text(t.answer_within_s)
    rows = [("Erlang B (no queue: callers lost)", _pct(g.blocking), "-", "-", "-", "-")]
    c = g.erlang_c
    if c is not None:
        rows.append(("Erlang C (callers wait as long as it takes)", "-",
                     _pct(c.p_wait), _pct(c.service_level), _wait(c.asa_s), "-"))
    a = g.erlang_a
    if a is not None:
        rows.append((f"Erlang A (callers hang up, patience {seconds_text(g.patience_s)})", "-",
                     _pct(a.p_wait), _pct(a.service_level_answered),
                     _wait(a.asa_answered_s), _pct(a.p_abandon)))
    notes = []
    if c is not None and not c.stable:
        notes.append(f"Erlang C: {g.slots} slots do not exceed the busy hour's "
                     f"{result.erlang.traffic:.2f} erlangs, so a queue of patient callers grows "
                     f"without bound; Erlang A's callers hang up, which keeps its queue finite.")
    return Section(
        f"Grade of service at the busy hour on the bottleneck's {g.slots} slots",
        ("model", "lost", "waiting", f"answered within {answer}", "mean wait (answered)",
         "hanging up"),
        tuple(rows), tuple(notes))


def _accounts_section(result: PlanResult, config: str) -> Section | None:
    if not result.accounts:
        return None
    neck = result.bottleneck
    rows = []
    for a in result.accounts:
        flag = "  <- below the stack-wide lowest cap" if a.lowest.cap < neck.cap else ""
        rows.append((a.account, str(a.numbers), f"{a.lowest.layer} {a.lowest.scope}",
                     str(a.lowest.cap), a.lowest.note + flag))
    lowest = min(result.accounts, key=lambda a: a.lowest.cap)
    notes = (f"The path above sums every account; each account's own calls meet its own "
             f"caps first. Plan one with its own volume: "
             f"{account_command(result, config, lowest.account)}",)
    marked = next((i for i, a in enumerate(result.accounts) if a.lowest.cap < neck.cap), None)
    return Section(f"Each account's own lowest cap (stack-wide: {neck.layer} {neck.scope}, "
                   f"{neck.cap})", ("account", "numbers", "lowest cap", "cap", "note"),
                   tuple(rows), notes, marked=marked)


def _rates_section(result: PlanResult) -> Section:
    rows = tuple((r.scope, f"{r.limit} per {format_duration(r.period_s)}",
                  f"{r.limit_per_s:.4g}", f"{r.peak_per_s:.4g}", "ok" if r.ok else "OVER")
                 for r in result.rates)
    return Section("Peak arrivals against every rate limit on the path",
                   ("window", "limit", "limit/s", "peak/s", ""), rows)


def _fix_section(result: PlanResult) -> Section:
    fix = result.fix
    rows = tuple((c.layer, c.scope, str(c.gap), c.action, _money(c.monthly_cost),
                  c.note) for c in fix.changes)
    total = f"Total: {fix.total_monthly_cost:,.2f} a month"
    if not fix.complete:
        total += f", plus {len(fix.unpriced)} change(s) with no price in [costs]"
    return Section(f"The cheapest fix to reach {result.requirement} (cheapest first)",
                   ("layer", "scope", "gap", "change", "monthly cost", "note"), rows,
                   (total + ".",))


def _campaign_sections(result: PlanResult) -> tuple[Section, Section] | None:
    campaign = result.campaign
    if campaign is None:
        return None
    rows = tuple((c.limit, f"{c.per_number_calls_per_hour:g}", str(c.numbers_needed))
                 for c in campaign.checks)
    cost = ("" if campaign.extra_monthly_cost is None
            else f" ({campaign.extra_monthly_cost:,.2f} a month)")
    note = (f"{campaign.numbers_needed} caller numbers needed for "
            f"{_calls(campaign.target_calls_per_hour)} calls/h; {campaign.numbers_current} in the "
            f"pool now; {campaign.extra_numbers} more{cost}.")
    carriers = tuple((c.layer, c.scope, str(c.cap), str(c.needed),
                      "ok" if c.ok else "CANNOT CARRY") for c in campaign.carriers)
    need = (f"The campaign keeps {_calls(campaign.target_calls_per_hour)} calls/h x "
            f"{format_duration(result.aht_s)} = {campaign.concurrency:.1f} calls up at once "
            f"(Little's Law).")
    blocked = campaign.blocked_by
    verdict = ("Every other layer on the path carries it." if not blocked else
               "Cannot carry the campaign's concurrency: " + "; ".join(
                   f"{c.layer} {c.scope} ({c.cap} < {c.needed})" for c in blocked)
               + ". More numbers will not help until these are raised.")
    return Section("Outbound campaign: caller numbers under the per-number limits",
                   ("per-number limit", "calls/h per number", "numbers needed"), rows,
                   (note,)), Section(
        "Outbound campaign: can the account's plan, the trunks and the pools carry it?",
        ("layer", "scope", "cap", "campaign needs", ""), carriers, (need, verdict),
        marked=next((i for i, c in enumerate(campaign.carriers) if not c.ok), None))


def sections(result: PlanResult, config: str = "stack.toml") -> list[Section]:
    """The report's tables, in reading order."""
    found = [_demand_section(result), _requirement_section(result), _path_section(result),
             _grade_section(result)]
    accounts = _accounts_section(result, config)
    if accounts is not None:
        found.append(accounts)
    if result.rates:
        found.append(_rates_section(result))
    if result.fix.changes:
        found.append(_fix_section(result))
    campaign = _campaign_sections(result)
    if campaign is not None:
        found.extend(campaign)
    return found


# ----------------------------------------------------------------------------- terminal


def print_report(result: PlanResult, config: str, console: Console) -> None:
    """The plan as rich tables, then warnings and the load-test command."""
    for section in sections(result, config):
        table = Table(title=escape(section.title), title_justify="left")
        for column in section.columns:
            table.add_column(escape(column), overflow="fold")
        for index, row in enumerate(section.rows):
            style = "bold red" if index == section.marked else None
            table.add_row(*(escape(cell) for cell in row), style=style)
        console.print(table)
        for note in section.notes:
            console.print(escape(note))
        console.print()
    if not result.fix.changes:
        console.print("[green]No change needed:[/] every layer reaches the requirement.")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    console.print(f"Load test at 1.5x: [bold]{escape(result.loadtest_command(config))}[/]",
                  soft_wrap=True)


# --------------------------------------------------------------------------------- HTML


_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .7em; text-align: left; }
th { background: #f4f4f4; }
tr.marked td { color: #b00; font-weight: 600; }
.warning { color: #8a5a00; }
code { background: #f4f4f4; padding: .2em .4em; }
svg { max-width: 100%; height: auto; }
"""


def _html_table(section: Section) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in section.columns)
    marked = ' class="marked"'
    body = "".join(
        f"<tr{marked if i == section.marked else ''}>"
        + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for i, row in enumerate(section.rows))
    notes = "".join(f"<p>{html.escape(note)}</p>" for note in section.notes)
    return (f"<h2>{html.escape(section.title)}</h2>\n<table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>\n{notes}\n")


def to_html(result: PlanResult, config: str) -> str:
    """One self-contained HTML page: the tables and the demand chart as inline SVG."""
    chart = demand_chart_svg(result)
    tables = "".join(_html_table(section) for section in sections(result, config))
    warnings = "".join(f'<p class="warning">warning: {html.escape(w)}</p>'
                       for w in result.warnings)
    command = html.escape(result.loadtest_command(config))
    title = html.escape(f"callgate plan: {config}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title><style>{_CSS}</style></head><body>\n"
            f"<h1>{title}</h1>\n<figure>{chart}</figure>\n{tables}{warnings}"
            f"<h2>Load test at 1.5x the requirement</h2><p><code>{command}</code></p>\n"
            f"</body></html>\n")
