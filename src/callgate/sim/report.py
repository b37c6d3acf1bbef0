"""A run's findings as terminal tables, JSON, or one self-contained HTML page with charts.

The tables are built once (:func:`sections`) and drawn by both the terminal and the HTML
page, so the two print the same numbers with the same names; JSON carries them to 6
decimals.

The charts are drawn with matplotlib (the ``plan`` extra) as inline SVG: each layer's
busiest scope over time against its cap, and how long the queued callers waited.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from callgate.errors import PLAN_EXTRA_HINT as INSTALL_HINT
from callgate.errors import MissingExtraError
from callgate.sim.results import LoadFindings, RunResult, ScopeRow, to_document
from callgate.sim.stats import Estimate, Summary

MOST_NUMBERS = 8  # number scopes shown in the terminal table (all of them are in --json)

__all__ = ["MissingExtraError", "print_report", "to_html", "to_json"]


def to_json(result: RunResult) -> str:
    return json.dumps(to_document(result), indent=2)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _s(value: float) -> str:
    return f"{value:,.1f}"


def _span(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _title(result: RunResult, config: str | None = None) -> str:
    span = _span(result.duration_s)
    if result.kind == "simulate":
        wall = result.perf.get("wall_s", 0.0)
        where = config if config is not None else result.config
        return (f"callgate simulate: {where}, {span} simulated in {wall:.1f} s "
                f"(seed {result.seed})")
    found = result.findings
    assert found is not None
    return (f"callgate loadtest: {span} simulated in {found.wall_s:.1f} s wall at "
            f"x{found.speed:g} (seed {result.seed})")


@dataclass(frozen=True)
class Section:
    """One table of the report, the same in the terminal and in HTML."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str = ""
    """One letter per column, ``l`` or ``r`` (default: first left, the rest right)."""
    notes: tuple[str, ...] = ()
    bad_rows: frozenset[int] = frozenset()
    """Rows to stand out (a scope over its cap)."""

    def justify(self, index: int) -> str:
        letter = self.align[index] if index < len(self.align) else ("l" if index == 0 else "r")
        return "left" if letter == "l" else "right"


def _counts_section(result: RunResult) -> Section:
    c = result.counts
    arrivals = max(c.arrivals, 1)
    rows = (("arrived", c.arrivals), ("  inbound", c.inbound), ("  outbound", c.outbound),
            ("admitted", c.admitted), ("queued", c.queued), ("  promoted", c.promoted),
            ("  abandoned", c.abandoned), ("retry_later answers", c.retried),
            ("rejected", c.rejected), ("completed", c.completed), ("worker died", c.died),
            ("lease lost", c.lost), ("unfinished", c.unfinished))
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(c.rejected_by_reason.items()))
    return Section("Calls", ("calls", "count", "of arrivals"), tuple(
        (name, f"{value:,}", "" if name == "retry_later answers" else _pct(value / arrivals))
        for name, value in rows), notes=(f"Rejected by reason: {reasons}",) if reasons else ())


def _summary_section(title: str, unit: str, rows: dict[str, Summary]) -> Section:
    columns = ("", "n", *(f"{name} ({unit})" for name in ("mean", "p50", "p90", "p99", "max")))
    # An empty sample has no mean: "-", never a made-up 0.0.
    return Section(title, columns, tuple(
        (name.replace("_", " "), f"{s.n:,}",
         *((_s(s.mean), _s(s.p50), _s(s.p90), _s(s.p99), _s(s.max)) if s.n else ("-",) * 5))
        for name, s in rows.items()))


_ESTIMATES = (
    ("p_rejected", "rejected (share of arrivals)"),
    ("p_queued", "queued (share of arrivals)"),
    ("p_abandoned", "hung up on hold (share of arrivals)"),
    ("wait_inbound_s", "mean wait, answered inbound (s)"),
    ("wait_queued_inbound_s", "mean wait, answered after queueing (s)"),
    ("wait_abandoned_s", "mean time on hold before hanging up (s)"),
    ("wait_outbound_s", "mean time to admission, outbound (s)"),
)


def estimate_cells(key: str, estimate: Estimate | None) -> tuple[str, str, str]:
    """(estimate, half-width, what it is the ratio of) as printed everywhere."""
    if estimate is None:
        return "-", "-", "fewer than 2 batches with calls"
    if key.startswith("p_"):
        return (f"{estimate.value:.4f}", f"{estimate.half_width:.4f}",
                f"{estimate.numerator:,.0f} / {estimate.denominator:,.0f} arrivals")
    return (f"{estimate.value:,.1f}", f"{estimate.half_width:,.1f}",
            f"{estimate.numerator:,.1f} s / {estimate.denominator:,.0f} callers")


def _estimates_section(result: RunResult) -> Section | None:
    found = result.estimates
    if not any(found.get(key) is not None for key, _ in _ESTIMATES):
        return None
    batches = max(e.batches for e in found.values() if e is not None)
    warm = (f", after a {_span(result.warmup_s)} warm-up" if result.warmup_s > 0 else "")
    rows = tuple((label, *estimate_cells(key, found.get(key))) for key, label in _ESTIMATES
                 if key in found)
    note = ("Each estimate is its count (or seconds) over the arrivals (or callers) beside it"
            f"{warm and ' (arrivals after the warm-up)'}; the interval is the ratio "
            "estimator's delta-method half-width over the batches, Student's t at 95%.")
    return Section(f"Estimates with 95% confidence intervals ({batches} batches of arrival "
                   f"time{warm})", ("measure", "estimate", "± (95%)", "ratio of"),
                   rows, align="lrrr", notes=(note,))


def _layers_section(result: RunResult) -> Section:
    rows = []
    for row in result.layers():
        peak = "-" if row["cap"] is None else f"{row['peak']} / {row['cap']}"
        at_cap = "-" if row["time_at_cap"] is None else _pct(row["time_at_cap"])
        rows.append((row["layer"], "-" if row["scopes"] is None else str(row["scopes"]),
                     row["busiest"] or "-", peak, at_cap, f"{row['refusals']:,}"))
    return Section("Per layer (busiest scope)", ("layer", "scopes", "busiest", "peak / cap",
                                                 "time at cap", "refusals"), tuple(rows),
                   align="lrlrrr")


def shown_scopes(rows: Sequence[ScopeRow]) -> tuple[list[ScopeRow], int]:
    """Every non-number scope, and the busiest few numbers; returns (rows, numbers hidden)."""
    numbers = sorted((r for r in rows if r.layer == "number"),
                     key=lambda r: (-r.refusals, -r.at_cap_s, -r.peak, r.scope))
    keep = set(id(r) for r in numbers[:MOST_NUMBERS])
    shown = [r for r in rows if r.layer != "number" or id(r) in keep]
    return shown, max(0, len(numbers) - MOST_NUMBERS)


def _scopes_section(result: RunResult, every: bool = False) -> Section:
    loadtest = result.findings is not None
    columns = ["layer", "scope", "cap", "peak", "mean", "time at cap", "refusals"]
    if loadtest:
        columns += ["gate's peak", "over cap"]
    rows, hidden = (list(result.scopes), 0) if every else shown_scopes(result.scopes)
    cells = []
    for r in rows:
        row = [r.layer, r.scope, str(r.cap), str(r.peak), f"{r.mean:.2f}", _pct(r.at_cap),
               f"{r.refusals:,}"]
        if loadtest:
            row += ["-" if r.server_peak is None else str(r.server_peak), str(r.over_cap)]
        cells.append(tuple(row))
    notes = (f"{hidden} quieter number(s) not shown; --json lists every scope",) if hidden else ()
    return Section("Per scope (levels in concurrent calls)", tuple(columns), tuple(cells),
                   align="ll" + "r" * (len(columns) - 2), notes=notes,
                   bad_rows=frozenset(i for i, r in enumerate(rows) if r.over_cap))


def _bottleneck_line(result: RunResult) -> str:
    neck = result.bottleneck
    if neck is None:
        return "Bottleneck: none; no scope reached its cap and no call was refused."
    return (f"Bottleneck: {neck['layer']} {neck['scope']}: {neck['refusals']:,} refusals, "
            f"at its cap {_pct(neck['time_at_cap'])} of the time.")


def sections(result: RunResult, every_scope: bool = False) -> list[Section]:
    """The report's tables in reading order (the load test's latency table last)."""
    found = [_counts_section(result),
             _summary_section("Waits (simulated seconds)", "s", result.waits)]
    estimates = _estimates_section(result)
    if estimates is not None:
        found.append(estimates)
    found += [_layers_section(result), _scopes_section(result, every_scope)]
    latency = _latency_section(result)
    if latency is not None:
        found.append(latency)
    return found


def _latency_section(result: RunResult) -> Section | None:
    if result.findings is None:
        return None
    return _summary_section("Request latency (wall)", "ms", result.findings.latency_ms)


def _table(section: Section) -> Table:
    table = Table(title=escape(section.title), title_justify="left")
    for index, name in enumerate(section.columns):
        table.add_column(escape(name), justify=section.justify(index),  # type: ignore[arg-type]
                         overflow="fold")
    for index, row in enumerate(section.rows):
        table.add_row(*(escape(cell) for cell in row),
                      style="bold red" if index in section.bad_rows else None)
    return table


def print_report(result: RunResult, console: Console) -> None:
    """The run as rich tables; a load test ends with its two must-be-zero numbers."""
    console.print(f"[bold]{escape(_title(result))}[/]")
    latency = _latency_section(result)
    for section in sections(result):
        if section == latency:
            continue  # after the bottleneck, with the load test's own findings
        console.print(_table(section))
        for note in section.notes:
            console.print(escape(note))
    console.print(escape(_bottleneck_line(result)), style="bold")
    found = result.findings
    if result.kind == "simulate":
        perf = result.perf
        console.print(f"{perf.get('decisions', 0):,.0f} gate decisions, "
                      f"{perf.get('decisions_per_s', 0):,.0f} per second of wall time.")
    if found is None or latency is None:
        return
    console.print(_table(latency))
    if found.dropped:
        console.print(f"[yellow]{found.dropped:,} arrivals not sent: --max-in-flight calls "
                      "were already running[/]")
    for name, value, detail in _verdicts(found):
        colour = "green" if value == 0 else "bold red"
        suffix = f" ({escape(detail)})" if detail else ""
        console.print(f"[{colour}]{name}: {value}[/]{suffix}")
    if not found.scopes_exact:
        console.print("[yellow]no --config: scopes come from the usage document; a call's "
                      "trunk is known only when there is one trunk[/]")


def _verdicts(found: LoadFindings) -> list[tuple[str, int, str]]:
    return [
        ("silent failures", found.silent_failures,
         ", ".join(f"{k} {v}" for k, v in sorted(found.failures_by_kind.items()))),
        ("cap violations", found.cap_violations,
         ", ".join(f"{v.key} saw {v.observed} > cap {v.cap}" for v in found.violations)),
    ]


# ------------------------------------------------------------------------------------ HTML


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError(
            f"the HTML report draws its charts with matplotlib, which is not installed: "
            f"{INSTALL_HINT}") from None
    return matplotlib


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg",
                   metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]


def charts_svg(result: RunResult) -> list[str]:
    """Inline SVGs: each charted scope over time against its cap (series ``gid``:
    ``level-<key>`` and ``cap-<key>``), and the queued callers' waits (``waits``)."""
    matplotlib = _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    caps = {row.key: row.cap for row in result.scopes}
    keys = [key for key in result.series if key in caps]
    hours = [t / 3600 for t in result.bucket_times]
    charts = []
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "callgate"}):
        if keys:
            figure = Figure(figsize=(10, 1.9 * len(keys) + 0.8), layout="constrained")
            FigureCanvasAgg(figure)
            axes_list = figure.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
            for axes, key in zip(axes_list, keys, strict=True):
                axes.step(hours, result.series[key], where="post", gid=f"level-{key}",
                          color="tab:blue", label="most concurrent calls in the interval")
                axes.axhline(caps[key], gid=f"cap-{key}", color="tab:red", linestyle="--",
                             label="cap")
                axes.set_ylim(0, max(caps[key], max(result.series[key], default=0)) * 1.15 + 1)
                axes.set_title(f"{key} (cap {caps[key]})", loc="left", fontsize="medium")
                axes.grid(alpha=0.3)
            axes_list[0].legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2,
                                fontsize="small", frameon=False)
            axes_list[-1].set_xlabel("simulated hours from the start")
            figure.suptitle("Concurrency against its cap (each layer's busiest scope)")
            charts.append(_svg(figure))
        if result.queue_waits:
            figure = Figure(figsize=(10, 3.6), layout="constrained")
            FigureCanvasAgg(figure)
            axes = figure.add_subplot()
            waits = result.queue_waits
            share = [(i + 1) / len(waits) for i in range(len(waits))]
            axes.step(waits, share, where="post", gid="waits", color="tab:purple")
            axes.set_xlabel("seconds on hold before being answered")
            axes.set_ylabel("share of queued callers answered")
            axes.set_ylim(0, 1.02)
            axes.set_title("Waits of the callers who were queued and then answered")
            axes.grid(alpha=0.3)
            charts.append(_svg(figure))
    return charts


_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .7em; text-align: left; }
th { background: #f4f4f4; }
.bad, tr.bad td { color: #b00; font-weight: 600; } .good { color: #070; font-weight: 600; }
td.r, th.r { text-align: right; }
svg { max-width: 100%; height: auto; }
"""


def _html_table(section: Section) -> str:
    right = [' class="r"' if section.justify(i) == "right" else ""
             for i in range(len(section.columns))]
    head = "".join(f"<th{right[i]}>{html.escape(c)}</th>" for i, c in enumerate(section.columns))
    body = "".join(
        ('<tr class="bad">' if i in section.bad_rows else "<tr>")
        + "".join(f"<td{right[j]}>{html.escape(cell)}</td>" for j, cell in enumerate(row))
        + "</tr>" for i, row in enumerate(section.rows))
    notes = "".join(f"<p>{html.escape(note)}</p>" for note in section.notes)
    return (f"<h2>{html.escape(section.title)}</h2>\n<table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>\n{notes}\n")


def to_html(result: RunResult) -> str:
    """One self-contained page: the verdicts, the charts as inline SVG, then the same tables
    as the terminal (every scope listed). The title names the stack file, not its path."""
    charts = "".join(f"<figure>{svg}</figure>\n" for svg in charts_svg(result))
    tables = "".join(_html_table(section) for section in sections(result, every_scope=True))
    found = result.findings
    verdict = ""
    if found is not None:
        verdict = "".join(
            f'<p class="{"good" if n == 0 else "bad"}">{html.escape(name)}: {n}'
            f"{f'<span> ({html.escape(detail)})</span>' if detail else ''}</p>"
            for name, n, detail in _verdicts(found))
    notes = f"<p><strong>{html.escape(_bottleneck_line(result))}</strong></p>"
    name = None if result.config is None else Path(result.config).name
    title = html.escape(_title(result, name))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title><style>{_CSS}</style></head><body>\n"
            f"<h1>{title}</h1>\n{verdict}{notes}{charts}{tables}</body></html>\n")
