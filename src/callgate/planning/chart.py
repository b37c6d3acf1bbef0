"""The plan's chart: demand by hour against every cap on the call's path, as inline SVG.

Picture the day's demand curve drawn over a stack of horizontal lines, one per cap: the
requirement is the dotted line the caps must clear, and the lowest cap, in red, is the one
that bites first. A cap far above the day (a rate window worth a thousand calls) would
squash the curve into the floor, so it is left off the scale and shown as a labelled
marker on the chart's top edge instead of a line there.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from callgate.errors import PLAN_EXTRA_HINT, MissingExtraError
from callgate.planning.plan import PlanResult


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError(
            f"the HTML report draws its chart with matplotlib, which is not installed: "
            f"{PLAN_EXTRA_HINT}") from None
    return matplotlib


@dataclass(frozen=True)
class ChartCap:
    """How one cap of the path is drawn: a line at its value, or, when it lies above the
    chart, a marker on the top edge labelled with its value (never a line there)."""

    index: int
    label: str
    cap: int
    off_chart: bool
    bottleneck: bool


def chart_top(result: PlanResult) -> float:
    """The chart's top: every cap up to 3x the demand side shows, with a margin."""
    demand = [calls / 3600 * result.aht_s for calls in result.demand.hourly_calls]
    base = max(result.requirement, max(demand), result.bottleneck.cap)
    return 1.12 * max([base] + [row.cap for row in result.path if row.cap <= 3 * base])


def chart_caps(result: PlanResult) -> list[ChartCap]:
    """Every cap on the path as the chart draws it (see :class:`ChartCap`)."""
    top = chart_top(result)
    caps = []
    for index, row in enumerate(result.path):
        neck = row is result.bottleneck
        off = row.cap > top
        label = f"{row.layer} {row.scope}: {row.cap:,}" + (" (bottleneck)" if neck else "")
        if row.cap == result.requirement:
            label += " (= requirement)"
        if off:
            label += " (above the chart)"
        caps.append(ChartCap(index, label, row.cap, off, neck))
    return caps


def demand_chart_svg(result: PlanResult) -> str:
    """Demand by hour against every cap on the path, as an inline SVG element.

    Series carry a ``gid``: ``demand`` (average concurrent calls each hour, Little's Law),
    ``requirement`` (drawn last, over any cap of the same value), and ``cap-<i>`` for the
    i-th layer of ``result.path``: a line, or for a cap above the chart a marker on its
    top edge.
    """
    matplotlib = _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    hours = list(range(len(result.demand.hourly_calls)))
    demand = [calls / 3600 * result.aht_s for calls in result.demand.hourly_calls]
    top = chart_top(result)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "callgate"}):
        figure = Figure(figsize=(10, 4.8), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        axes.plot(hours, demand, gid="demand", color="black", linewidth=2.2, marker="o",
                  markersize=3, label="demand: average concurrent calls (Little)", zorder=4)
        styles = ("--", "-.", (0, (5, 1)), (0, (3, 1, 1, 1)))
        for cap in chart_caps(result):
            colour = "tab:red" if cap.bottleneck else f"C{cap.index % 10}"
            if cap.off_chart:
                axes.plot([23], [top], gid=f"cap-{cap.index}", label=cap.label, color=colour,
                          linestyle="none", marker="^", markersize=9, clip_on=False, zorder=3)
            else:
                axes.axhline(cap.cap, gid=f"cap-{cap.index}", label=cap.label, color=colour,
                             linewidth=2.6 if cap.bottleneck else 1.3,
                             linestyle=styles[cap.index % len(styles)], zorder=2)
        # Last and on top: a cap of the same value must not hide the requirement.
        axes.axhline(result.requirement, gid="requirement", color="black", linestyle=":",
                     linewidth=2.0, label=f"requirement ({result.requirement})", zorder=5)
        axes.set_xlim(0, 23)
        axes.set_ylim(0, top)
        axes.set_xticks(hours)
        axes.set_xlabel("hour of day")
        axes.set_ylabel("concurrent calls")
        axes.set_title("Demand by hour against each cap on the call's path")
        axes.grid(alpha=0.3)
        axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg",
                       metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]
