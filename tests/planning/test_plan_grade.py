"""The grade at the bottleneck under each model's own name; edge targets; the chart; the fix."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from callgate.config import load_stack
from callgate.planning.chart import chart_caps, demand_chart_svg
from callgate.planning.command import plan as plan_command
from callgate.planning.erlang import erlang_b, erlang_c, lines_for_blocking
from callgate.planning.erlang_a import erlang_a
from callgate.planning.plan import Targets, Volume, plan
from callgate.planning.report import sections, to_document, to_html

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_STACK = str(ROOT / "examples" / "stack.toml")
SVG = "{http://www.w3.org/2000/svg}"


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(plan_command, ["--config", EXAMPLE_STACK, *args])


def test_grade_names_each_models_figures_in_text_json_and_html() -> None:
    """600 calls/h on the example's 25 slots: Erlang C's unbounded queue and Erlang A's
    67.2% waiting / 60.8% within 20s / ASA 11.4s / 20.1% hanging up, each under its name."""
    result = plan(load_stack(EXAMPLE_STACK), Volume(calls_per_hour=600), 180)
    grade = to_document(result, "stack.toml")["grade_at_bottleneck"]
    a = erlang_a(30.0, 25, 180, 60, 20)
    assert grade["erlang_b"] == {"blocking": erlang_b(30.0, 25)}
    assert grade["erlang_c"]["p_wait"] == 1.0 and grade["erlang_c"]["asa_s"] is None
    assert grade["erlang_c"]["stable"] is False
    assert grade["erlang_a"]["p_wait"] == a.p_wait and grade["erlang_a"]["patience_s"] == 60
    assert grade["erlang_a"]["service_level"] == a.service_level_answered
    assert grade["erlang_a"]["asa_answered_s"] == a.asa_answered_s
    assert grade["erlang_a"]["p_abandon"] == a.p_abandon
    section = next(s for s in sections(result) if s.title.startswith("Grade of service"))
    rows = {row[0].split(" (")[0]: row for row in section.rows}
    assert rows["Erlang C"][2:5] == ("100.0%", "0.0%", "unbounded")
    assert rows["Erlang A"][2:] == ("67.2%", "60.8%", "11.4s", "20.1%")
    page = to_html(result, "stack.toml")
    assert "Erlang A (callers hang up, patience 1m)" in page and "67.2%" in page
    text = run_cli("--calls-per-hour", "600", "--aht", "3m").output
    assert re.search(r"Erlang A.*67\.2%", text.replace("\n", " ")) is not None


def test_answer_within_zero_is_accepted_in_the_api_and_the_cli() -> None:
    """answer_within_s = 0 plans for callers answered without waiting: 1 - p_wait."""
    result = plan(load_stack(EXAMPLE_STACK), Volume(calls_per_hour=600), 180,
                  targets=Targets(answer_within_s=0))
    assert result.grade.service_level == 0.0  # 25 slots, 30 erlangs: everybody waits
    outcome = run_cli("--calls-per-hour", "60", "--aht", "3m", "--answer-within", "0s",
                      "--json")
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(outcome.stdout)
    c = erlang_c(3.0, 25, 180, 0)
    assert document["targets"]["answer_within_s"] == 0
    assert document["grade_at_bottleneck"]["erlang_c"]["service_level"] == 1 - c.p_wait


def test_patience_zero_plans_erlang_b_and_endless_patience_erlang_c() -> None:
    """--patience 0s makes Erlang A Erlang B's loss; --patience inf makes it Erlang C."""
    zero = json.loads(run_cli("--calls-per-hour", "600", "--aht", "3m", "--patience", "0s",
                              "--json").stdout)
    assert zero["erlang"]["agents_for_abandon"] == lines_for_blocking(30.0, 0.05)
    assert zero["grade_at_bottleneck"]["erlang_a"]["p_abandon"] == erlang_b(30.0, 25)
    endless = run_cli("--calls-per-hour", "60", "--aht", "3m", "--patience", "inf", "--json")
    assert endless.exit_code == 0, endless.output
    document = json.loads(endless.stdout)
    assert document["targets"]["patience_endless"] is True
    assert document["targets"]["patience_s"] is None  # strict JSON has no Infinity
    grade = document["grade_at_bottleneck"]
    assert grade["erlang_a"]["p_wait"] == grade["erlang_c"]["p_wait"]
    assert grade["erlang_a"]["p_abandon"] == 0.0
    assert document["erlang"]["agents_for_service_level_abandon"] == (
        document["erlang"]["agents_for_service_level"])


def test_targets_accept_the_edges_and_refuse_what_is_not_a_time() -> None:
    """Targets take 0 s and inf patience; a negative answer time names its field."""
    Targets(answer_within_s=0, patience_s=0)
    Targets(patience_s=math.inf)
    with pytest.raises(ValueError, match=r"^answer_within_s"):
        Targets(answer_within_s=-1)
    with pytest.raises(ValueError, match=r"^patience_s"):
        Targets(patience_s=-1)


def test_requirement_line_is_drawn_over_a_cap_of_the_same_value() -> None:
    """When a cap equals the requirement, the requirement is drawn last (on top) and the
    cap's legend entry says so."""
    result = plan(load_stack(EXAMPLE_STACK), Volume(calls_per_hour=240), 180)
    assert any(row.cap == result.requirement for row in result.path), result.requirement
    svg = demand_chart_svg(result)
    ids = [g.get("id") for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("id")]
    drawn = [i for i in ids if i == "requirement" or (i or "").startswith("cap-")]
    assert drawn[-1] == "requirement"
    assert any("(= requirement)" in cap.label for cap in chart_caps(result))


def test_a_cap_above_the_chart_is_a_marker_not_a_line_at_the_top_edge() -> None:
    """The example's trunk window (1,260 calls) lies far above: a labelled marker on the
    top edge, and no horizontal line there as if it were a cap of that height."""
    result = plan(load_stack(EXAMPLE_STACK), Volume(calls_per_hour=600), 180)
    caps = chart_caps(result)
    off = [cap for cap in caps if cap.off_chart]
    assert [cap.cap for cap in off] == [1260] and "above the chart" in off[0].label
    root = ET.fromstring(demand_chart_svg(result))
    groups = {g.get("id"): g for g in root.iter(f"{SVG}g") if g.get("id")}
    marker = groups[f"cap-{off[0].index}"]
    assert list(marker.iter(f"{SVG}use")), "the off-chart cap is a marker"
    line = groups[f"cap-{caps[0].index}"]
    assert not list(line.iter(f"{SVG}use")), "an on-chart cap is a line"


def test_fix_charges_every_session_of_a_whole_key_it_buys() -> None:
    """deepgram (1 key of 40) short of 75: the fix buys a 40-session key and charges 40
    sessions (320.00 at 8.00), not the 35-session gap."""
    result = plan(load_stack(EXAMPLE_STACK), Volume(calls_per_hour=600), 180)
    change = next(c for c in result.fix.changes if c.scope == "deepgram")
    assert change.gap == 35 and change.monthly_cost == 320.0
    assert change.action.startswith("+40 sessions: add 1 key of 40 sessions")
    openai = next(c for c in result.fix.changes if c.scope == "openai-realtime")
    # 5 keys of 10 (50 sessions) plus the 5 the quota lifts on the keys already there.
    assert openai.monthly_cost == 55 * 40.0 and openai.action.startswith("+55 sessions")
