"""A run's findings as terminal tables, JSON, or one self-contained HTML page with charts.

The charts are drawn with matplotlib (the ``plan`` extra) as inline SVG: each layer's
busiest scope over time against its cap, and how long the queued callers waited.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from callgate.errors import PLAN_EXTRA_HINT as INSTALL_HINT
from callgate.errors import MissingExtraError
from callgate.sim.results import RunResult, ScopeRow, to_document
from callgate.sim.stats import Summary

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


def _title(result: RunResult) -> str:
    span = _span(result.duration_s)
    if result.kind == "simulate":
        wall = result.perf.get("wall_s", 0.0)
        return (f"callgate simulate: {result.config}, {span} simulated in {wall:.1f} s "
                f"(seed {result.seed})")
    found = result.findings
    assert found is not None
    return (f"callgate loadtest: {span} simulated in {found.wall_s:.1f} s wall at "
            f"x{found.speed:g} (seed {result.seed})")


def _counts_table(result: RunResult) -> Table:
    c = result.counts
    arrivals = max(c.arrivals, 1)
    table = Table(title="Calls", title_justify="left")
    table.add_column("calls")
    table.add_column("count", justify="right")
    table.add_column("of arrivals", justify="right")
    rows = (("arrived", c.arrivals), ("  inbound", c.inbound), ("  outbound", c.outbound),
            ("admitted", c.admitted), ("queued", c.queued), ("  promoted", c.promoted),
            ("  abandoned", c.abandoned), ("retry_later answers", c.retried),
            ("rejected", c.rejected), ("completed", c.completed), ("worker died", c.died),
            ("lease lost", c.lost), ("unfinished", c.unfinished))
    for name, value in rows:
        share = "" if name == "retry_later answers" else _pct(value / arrivals)
        table.add_row(name, f"{value:,}", share)
    return table


def _summary_table(title: str, unit: str, rows: dict[str, Summary]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for name in ("n", "mean", "p50", "p90", "p99", "max"):
        table.add_column(name if name == "n" else f"{name} ({unit})", justify="right")
    for name, s in rows.items():
        table.add_row(escape(name), f"{s.n:,}", _s(s.mean), _s(s.p50), _s(s.p90), _s(s.p99),
                      _s(s.max))
    return table


def _layers_table(result: RunResult) -> Table:
    table = Table(title="Per layer (busiest scope)", title_justify="left")
    for name, justify in (("layer", "left"), ("scopes", "right"), ("busiest", "left"),
                          ("peak / cap", "right"), ("time at cap", "right"),
                          ("refusals", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in result.layers():
        peak = "-" if row["cap"] is None else f"{row['peak']} / {row['cap']}"
        at_cap = "-" if row["time_at_cap"] is None else _pct(row["time_at_cap"])
        table.add_row(row["layer"], "-" if row["scopes"] is None else str(row["scopes"]),
                      escape(row["busiest"] or "-"), peak, at_cap, f"{row['refusals']:,}")
    return table


def shown_scopes(rows: Sequence[ScopeRow]) -> tuple[list[ScopeRow], int]:
    """Every non-number scope, and the busiest few numbers; returns (rows, numbers hidden)."""
    numbers = sorted((r for r in rows if r.layer == "number"),
                     key=lambda r: (-r.refusals, -r.at_cap_s, -r.peak, r.scope))
    keep = set(id(r) for r in numbers[:MOST_NUMBERS])
    shown = [r for r in rows if r.layer != "number" or id(r) in keep]
    return shown, max(0, len(numbers) - MOST_NUMBERS)


def _scopes_table(result: RunResult) -> Table:
    loadtest = result.findings is not None
    table = Table(title="Per scope (levels in concurrent calls)", title_justify="left")
    columns = ["layer", "scope", "cap", "peak", "mean", "time at cap", "refusals"]
    if loadtest:
        columns += ["gate's peak", "over cap"]
    for name in columns:
        if name == "scope":
            table.add_column(name, overflow="fold")
        else:
            table.add_column(name, justify="left" if name == "layer" else "right")
    rows, hidden = shown_scopes(result.scopes)
    for r in rows:
        cells = [r.layer, escape(r.scope), str(r.cap), str(r.peak), f"{r.mean:.2f}",
                 _pct(r.at_cap), f"{r.refusals:,}"]
        if loadtest:
            cells += ["-" if r.server_peak is None else str(r.server_peak), str(r.over_cap)]
        style = "bold red" if r.over_cap else None
        table.add_row(*cells, style=style)
    if hidden:
        table.caption = f"{hidden} quieter number(s) not shown; --json lists every scope"
    return table


def _estimates_line(result: RunResult) -> str:
    parts = []
    names = {"p_rejected": "rejected", "p_queued": "queued", "p_abandoned": "abandoned"}
    for key, label in names.items():
        est = result.estimates.get(key)
        if est is not None:
            parts.append(f"{label} {est.value:.4f} ± {est.half_width:.4f}")
    if not parts:
        return ""
    batches = next(e.batches for e in result.estimates.values() if e is not None)
    return (f"Fractions of arrivals (95% CI, batch means over {batches} batches): "
            + ", ".join(parts))


def _bottleneck_line(result: RunResult) -> str:
    neck = result.bottleneck
    if neck is None:
        return "Bottleneck: none; no scope reached its cap and no call was refused."
    return (f"Bottleneck: {neck['layer']} {neck['scope']}: {neck['refusals']:,} refusals, "
            f"at its cap {_pct(neck['time_at_cap'])} of the time.")


def print_report(result: RunResult, console: Console) -> None:
    """The run as rich tables; a load test ends with its two must-be-zero numbers."""
    console.print(f"[bold]{escape(_title(result))}[/]")
    console.print(_counts_table(result))
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(result.counts.rejected_by_reason.items()))
    if reasons:
        console.print(f"Rejected by reason: {escape(reasons)}")
    console.print(_summary_table("Waits (simulated seconds)", "s", result.waits))
    console.print(_layers_table(result))
    console.print(_scopes_table(result))
    line = _estimates_line(result)
    if line:
        console.print(escape(line))
    console.print(escape(_bottleneck_line(result)), style="bold")
    found = result.findings
    if result.kind == "simulate":
        perf = result.perf
        console.print(f"{perf.get('decisions', 0):,.0f} gate decisions, "
                      f"{perf.get('decisions_per_s', 0):,.0f} per second of wall time.")
    if found is None:
        return
    console.print(_summary_table("Request latency (wall)", "ms", found.latency_ms))
    if found.dropped:
        console.print(f"[yellow]{found.dropped:,} arrivals not sent: --max-in-flight calls "
                      "were already running[/]")
    for name, value, detail in (
        ("silent failures", found.silent_failures,
         ", ".join(f"{k} {v}" for k, v in sorted(found.failures_by_kind.items()))),
        ("cap violations", found.cap_violations,
         ", ".join(f"{v.key} saw {v.observed} > cap {v.cap}" for v in found.violations)),
    ):
        colour = "green" if value == 0 else "bold red"
        suffix = f" ({escape(detail)})" if detail else ""
        console.print(f"[{colour}]{name}: {value}[/]{suffix}")
    if not found.scopes_exact:
        console.print("[yellow]no --config: scopes come from the usage document; a call's "
                      "trunk is known only when there is one trunk[/]")


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
.bad { color: #b00; font-weight: 600; } .good { color: #070; font-weight: 600; }
svg { max-width: 100%; height: auto; }
"""


def _html_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return (f"<h2>{html.escape(title)}</h2>\n<table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>\n")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:,.4g}"
    return str(value)


def to_html(result: RunResult) -> str:
    """One self-contained page: the charts as inline SVG, then the tables."""
    charts = "".join(f"<figure>{svg}</figure>\n" for svg in charts_svg(result))
    doc = to_document(result)
    parts = [_html_table("Calls", list(doc["counts"])[:-1],
                         [[_fmt(v) for k, v in doc["counts"].items()
                           if k != "rejected_by_reason"]])]
    parts.append(_html_table("Waits (simulated seconds)", ["", "n", "mean", "p50", "p90", "p99",
                                                           "max"],
                             [[name, *(_fmt(v) for v in s.values())]
                              for name, s in doc["waits_s"].items()]))
    parts.append(_html_table("Per layer", ["layer", "scopes", "busiest", "peak", "cap",
                                           "time at cap", "refusals"],
                             [[_fmt(v) for v in row.values()] for row in doc["layers"]]))
    scope_columns = list(doc["scopes"][0]) if doc["scopes"] else []
    parts.append(_html_table("Per scope", scope_columns,
                             [[_fmt(v) for v in row.values()] for row in doc["scopes"]]))
    found = result.findings
    verdict = ""
    if found is not None:
        parts.append(_html_table("Request latency (wall ms)", ["", "n", "mean", "p50", "p90",
                                                               "p99", "max"],
                                 [[name, *(_fmt(v) for v in s.values())]
                                  for name, s in doc["latency_ms"].items()]))
        verdict = "".join(
            f'<p class="{"good" if n == 0 else "bad"}">{name}: {n}</p>'
            for name, n in (("silent failures", found.silent_failures),
                            ("cap violations", found.cap_violations)))
    notes = "".join(f"<p>{html.escape(line)}</p>" for line in (
        _estimates_line(result), _bottleneck_line(result)) if line)
    title = html.escape(_title(result))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title><style>{_CSS}</style></head><body>\n"
            f"<h1>{title}</h1>\n{verdict}{notes}{charts}{''.join(parts)}</body></html>\n")
