"""Tests for the capacity planner: ``plan()``, its report, its profile files, ``callgate plan``."""

from __future__ import annotations

import json
import math
import re
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from callgate.config import Stack, parse_stack
from callgate.errors import UnknownNumberError
from callgate.planning.command import plan as plan_command
from callgate.planning.erlang_a import agents_for_abandon, erlang_a
from callgate.planning.plan import PlanResult, Targets, Volume, plan
from callgate.planning.report import to_document, to_html
from callgate.planning.traffic_profile import ProfileError, load_profile, parse_profile

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_STACK = ROOT / "examples" / "stack.toml"
EXAMPLE_PROFILE = ROOT / "examples" / "profile-business-hours.toml"
NUMBER = "+15550000001"

# 600 calls an hour (10 a minute) of 3 minutes: 30 erlangs. The rule of thumb asks for
# 30 x 2.5 = 75 slots; Erlang B at 1% for 42 lines, Erlang C 80%/20s for 35, Erlang A
# (patience 60 s) for 30 (service level) and 33 (5% abandon). The requirement is 75.
HOUR_600 = Volume(calls_per_hour=600)
REQUIREMENT = 75


def stack_toml(
    *,
    number_cap: int = 100,
    trunk_cap: int = 100,
    plan_cap: int = 100,
    pool_cap: int | None = None,
    db: tuple[int, int] = (100, 1),
    number_windows: str = "[]",
    extra: str = "",
    costs: str = "",
) -> str:
    """A one-number stack whose every layer is 100 calls wide unless told otherwise."""
    pool = "" if pool_cap is None else f"max_sessions = {pool_cap}"
    return f"""
[trunks.t1]
max_concurrent = {trunk_cap}

[plans.basic]
max_concurrent = {plan_cap}
price = 100.0

[accounts.acme]
plan = "basic"

[numbers."{NUMBER}"]
account = "acme"
trunk = "t1"
max_concurrent = {number_cap}
windows = {number_windows}

[providers.llm]
keys = ["k1", "k2"]
sessions_per_key = 50
{pool}

[resources.db]
capacity = {db[0]}
per_call = {db[1]}
{extra}
[costs]
{costs}
"""


def build(text: str) -> Stack:
    return parse_stack(tomllib.loads(text))


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(plan_command, list(args))


# ------------------------------------------------------------------------- Little's Law


def test_littles_law_ten_calls_a_minute_of_three_minutes_is_thirty_concurrent() -> None:
    """600 calls/h x 3 min = 30 average concurrent calls; x 2.5 = a ceiling of 75."""
    result = plan(build(stack_toml()), HOUR_600, 180)
    demand = result.demand
    assert demand.average_concurrency == pytest.approx(30.0)
    assert demand.busy_hour_concurrency == pytest.approx(30.0)
    assert demand.rule_of_thumb == pytest.approx(75.0)
    assert result.rule_of_thumb_slots == 75
    assert demand.peak_arrivals_per_s == pytest.approx(600 * 2.5 / 3600)
    assert demand.busy_hour_ratio is None


def test_erlang_requirements_at_the_busy_hour_match_the_tables() -> None:
    """30 erlangs: 42 lines at 1% (Erlang B), 35 at 80/20 (C), 30 and 33 with patience (A)."""
    result = plan(build(stack_toml()), HOUR_600, 180)
    erlang = result.erlang
    assert erlang.traffic == pytest.approx(30.0)
    assert (erlang.lines_for_blocking, erlang.agents_for_service_level) == (42, 35)
    assert (erlang.agents_for_service_level_abandon, erlang.agents_for_abandon) == (30, 33)
    assert (result.requirement, result.requirement_basis) == (REQUIREMENT, "rule_of_thumb")
    assert "2.5x rule covers minute-to-minute swings" in result.explanation


def test_day_volume_assumes_a_ten_percent_busy_hour() -> None:
    """3,000 calls/day: 125/h on average (6.25 concurrent); the busy hour 300 -> 24 lines."""
    result = plan(build(stack_toml()), Volume(calls_per_day=3000), 180)
    demand = result.demand
    assert demand.average_concurrency == pytest.approx(6.25)
    assert demand.busy_hour_calls == pytest.approx(300)
    assert demand.busy_hour_ratio == 0.1
    assert max(demand.hourly_calls) == pytest.approx(300)
    assert math.fsum(demand.hourly_calls) == pytest.approx(3000)
    assert result.erlang.lines_for_blocking == 24
    assert (result.requirement, result.requirement_basis) == (24, "erlang_b")


def test_profile_busy_hour_is_its_fullest_hour() -> None:
    """The example profile peaks at 10:00 with 400 calls: 20 erlangs, 30 lines at 1%."""
    profile = load_profile(EXAMPLE_PROFILE)
    result = plan(build(stack_toml()), Volume(profile=profile), 180)
    assert (profile.total, profile.busy_hour, profile.busy_hour_calls) == (3465, 10, 400)
    assert result.demand.busy_hour_ratio == pytest.approx(400 / 3465)
    assert result.demand.average_concurrency == pytest.approx(3465 / 24 / 20)
    assert result.erlang.lines_for_blocking == 30


# ------------------------------------------------------------------- the lowest cap, named


@pytest.mark.parametrize(
    ("overrides", "layer", "scope", "cap"),
    [
        ({"number_cap": 60}, "number", NUMBER, 60),
        ({"trunk_cap": 50}, "trunk", "t1", 50),
        ({"plan_cap": 40}, "account", "acme", 40),
        ({"pool_cap": 35}, "provider", "llm", 35),
        ({"db": (90, 3)}, "resource", "db", 30),
        ({"number_windows": '[{ direction = "inbound", limit = 600, per = "1h" }]'},
         "window", f"{NUMBER}:inbound:1h", 30),
    ],
    ids=["number", "trunk", "plan", "provider-pool", "resource", "window"],
)
def test_each_layer_in_turn_is_named_the_bottleneck(
    overrides: dict[str, Any], layer: str, scope: str, cap: int
) -> None:
    """Shrinking one layer makes it the lowest cap on the path, with its exact cap."""
    result = plan(build(stack_toml(**overrides)), HOUR_600, 180, number=NUMBER)
    neck = result.bottleneck
    assert (neck.layer, neck.scope, neck.cap) == (layer, scope, cap)
    assert result.requirement == REQUIREMENT
    assert result.headroom == cap - REQUIREMENT
    assert result.shortfall == REQUIREMENT - cap
    assert [row.cap for row in result.path if row is not neck] == [100] * (len(result.path) - 1)


def test_window_sustains_limit_per_period_times_aht() -> None:
    """A 600/h window at 3 min a call sustains 30 concurrent; peak 0.42/s is over its 0.17/s."""
    windows = '[{ direction = "inbound", limit = 600, per = "1h" }]'
    result = plan(build(stack_toml(number_windows=windows)), HOUR_600, 180)
    (rate,) = result.rates
    assert rate.limit_per_s == pytest.approx(600 / 3600)
    assert rate.peak_per_s == pytest.approx(600 * 2.5 / 3600)
    assert not rate.ok
    assert any("exceed the window" in warning for warning in result.warnings)


def test_outbound_windows_do_not_limit_inbound_calls() -> None:
    """A number's outbound window is not on an inbound call's path."""
    windows = '[{ direction = "outbound", limit = 1, per = "1m" }]'
    result = plan(build(stack_toml(number_windows=windows)), HOUR_600, 180)
    assert [row.layer for row in result.path] == [
        "number", "trunk", "account", "provider", "resource"]


def test_pool_capacity_is_keys_times_sessions_within_the_pool_cap() -> None:
    """Two keys of 50 sessions carry 100, a pool cap of 35 cuts that to 35."""
    result = plan(build(stack_toml(pool_cap=35)), HOUR_600, 180)
    (pool,) = [row for row in result.path if row.layer == "provider"]
    assert (pool.scope, pool.cap) == ("llm", 35)


WHOLE_STACK = """
[trunks.east]
max_concurrent = 40
max_cps = 5
[trunks.spare]
max_concurrent = 1
[plans.starter]
max_concurrent = 5
price = 49.0
[plans.growth]
max_concurrent = 25
price = 299.0
[plans.scale]
max_concurrent = 100
price = 999.0
[accounts.a]
plan = "growth"
reserved_inbound = 5
[accounts.b]
plan = "starter"
[number_defaults]
max_concurrent = 4
trunk = "east"
windows = [
  { direction = "outbound", limit = 30, per = "1h" },
  { direction = "outbound", limit = 1, per = "1m" },
]
[numbers."+15550000001"]
account = "a"
max_concurrent = 10
[numbers."+15550000002"]
account = "a"
[numbers."+15550000003"]
account = "a"
[numbers."+15550000004"]
account = "b"
[costs]
number = 1.15
"""


def test_whole_stack_sums_each_layer_over_the_scopes_on_the_path() -> None:
    """Numbers 10+4+4+4, plans 25+5; the trunk no number uses is off the path."""
    result = plan(build(WHOLE_STACK), Volume(calls_per_hour=100), 180)
    caps = {row.layer: (row.scope, row.cap) for row in result.path}
    assert caps["number"] == ("all 4 numbers", 22)
    assert caps["trunk"] == ("east", 40)
    assert caps["account"] == ("a + b", 30)
    assert caps["window"] == ("east:any:1s", 900)  # 5/s x 180 s
    assert result.bottleneck.layer == "number"


def test_one_inbound_number_follows_its_own_path() -> None:
    """--number plans that number's cap, its trunk and its account's plan."""
    result = plan(build(WHOLE_STACK), Volume(calls_per_hour=100), 180, number="+15550000004")
    caps = {row.layer: (row.scope, row.cap) for row in result.path}
    assert caps["number"] == ("+15550000004", 4)
    assert caps["account"] == ("b", 5)


def test_outbound_uses_the_account_pool_and_the_plan_less_reserved() -> None:
    """Outbound from account a: its 3 numbers (18 calls), plan 25 - 5 reserved, windows."""
    result = plan(build(WHOLE_STACK), Volume(calls_per_hour=60), 180, direction="outbound",
                  number="+15550000002")
    caps = {row.scope: row.cap for row in result.path}
    assert caps["a pool of 3 numbers"] == 18
    assert caps["a"] == 20
    assert caps["3 numbers:outbound:1h"] == 4  # 90 calls/h x 3 min = 4.5 concurrent
    assert caps["3 numbers:outbound:1m"] == 9  # 3/min x 3 min
    assert result.bottleneck.scope == "3 numbers:outbound:1h"
    assert result.erlang.agents_for_service_level is None  # outbound never queues


def test_outbound_campaign_counts_caller_numbers_under_the_windows() -> None:
    """500 calls/h at 30/h per number needs 17 numbers (1/min: 9; 4 concurrent: 7); 3 now."""
    result = plan(build(WHOLE_STACK), Volume(calls_per_hour=500), 180, direction="outbound",
                  number="+15550000002", campaign_calls_per_hour=500)
    campaign = result.campaign
    assert campaign is not None
    assert [(c.per_number_calls_per_hour, c.numbers_needed) for c in campaign.checks] == [
        (60.0, 9), (30.0, 17), (80.0, 7)]
    assert (campaign.numbers_needed, campaign.numbers_current) == (17, 3)
    assert (campaign.extra_numbers, campaign.extra_monthly_cost) == (14, 16.1)


def test_unknown_number_is_refused_by_name() -> None:
    """Planning a number the stack lacks raises UnknownNumberError naming it."""
    with pytest.raises(UnknownNumberError, match=r"\+15559999999"):
        plan(build(WHOLE_STACK), HOUR_600, 180, number="+15559999999")


# ----------------------------------------------------------------------- the cheapest fix

PLANS_FOR_FIX = """
[plans.enterprise]
max_concurrent = 500
price = 1000.0
[plans.pro]
max_concurrent = 80
price = 200.0
[plans.small]
max_concurrent = 60
price = 150.0
"""


def test_cheapest_fix_steps_to_the_cheapest_plan_that_fits_before_trunk_channels() -> None:
    """Plan 40 and trunk 60 below 75: plan basic -> pro (+100) beats 15 channels x 12."""
    text = stack_toml(plan_cap=40, trunk_cap=60, extra=PLANS_FOR_FIX, costs="trunk_channel = 12.0")
    fix = plan(build(text), HOUR_600, 180).fix
    assert [(c.layer, c.gap, c.monthly_cost) for c in fix.changes] == [
        ("account", 35, 100.0), ("trunk", 15, 180.0)]
    assert fix.changes[0].action == "acme: plan basic -> pro"
    assert (fix.total_monthly_cost, fix.complete) == (280.0, True)


def test_cheapest_fix_buys_numbers_when_numbers_are_cheapest() -> None:
    """Number cap 60 (1 more number at 1.15) is cheaper than 40 provider sessions at 40."""
    text = stack_toml(number_cap=60, pool_cap=35,
                      costs='number = 1.15\nprovider_session = { llm = 40.0 }')
    fix = plan(build(text), HOUR_600, 180).fix
    number, provider = fix.changes
    assert (number.layer, number.action, number.monthly_cost) == ("number", "+1 number", 1.15)
    assert (provider.layer, provider.gap, provider.monthly_cost) == ("provider", 40, 1600.0)
    assert "quota increase (pool cap 35 -> 75)" in provider.action
    assert fix.total_monthly_cost == 1601.15


def test_layers_below_the_requirement_without_a_price_are_listed_unpriced() -> None:
    """A resource with no resource_unit price is listed, unpriced, after the priced fixes."""
    text = stack_toml(number_cap=60, db=(90, 3), costs="number = 2.0")
    fix = plan(build(text), HOUR_600, 180).fix
    assert [(c.layer, c.monthly_cost) for c in fix.changes] == [
        ("number", 2.0), ("resource", None)]
    assert fix.changes[1].action == "+135 db units"  # 45 calls x 3 units
    assert "no price in [costs]" in fix.changes[1].note
    assert (fix.total_monthly_cost, fix.complete) == (2.0, False)


def test_one_purchase_of_numbers_raises_caps_and_windows_together() -> None:
    """Outbound, numbers short on concurrency and on windows: one buy of the larger count."""
    result = plan(build(WHOLE_STACK), Volume(calls_per_hour=400), 180, direction="outbound",
                  number="+15550000002")
    numbers = [c for c in result.fix.changes if "number" in c.action]
    bought = [c for c in numbers if c.action.startswith("+")]
    assert len(bought) == 1 and bought[0].scope == "3 numbers:outbound:1h"
    # requirement 50 (20 erl x 2.5): the 1h window holds 4.5, each number adds 1.5 -> 31.
    assert (result.requirement, bought[0].action, bought[0].monthly_cost) == (
        50, "+31 numbers", 35.65)
    assert all(c.monthly_cost == 0.0 for c in numbers if c is not bought[0])


def test_plan_upgrade_across_accounts_picks_the_cheapest_mix() -> None:
    """Accounts of 25 and 5 needing 32 together: starter -> growth (+250), not growth -> scale."""
    result = plan(build(WHOLE_STACK), Volume(calls_per_hour=320), 180,
                  targets=Targets(blocking=None, service_level=None, max_abandon=None),
                  peak_factor=2.0)
    assert result.requirement == 32
    (change,) = [c for c in result.fix.changes if c.layer == "account"]
    assert (change.action, change.monthly_cost) == ("b: plan starter -> growth", 250.0)


def test_no_fix_when_every_layer_reaches_the_requirement() -> None:
    """Headroom everywhere: no change is proposed and the total is zero."""
    result = plan(build(stack_toml()), HOUR_600, 180)
    assert result.headroom == 25
    assert result.fix.changes == ()
    assert result.fix.total_monthly_cost == 0.0


# ------------------------------------------------------------------------------ warnings


def test_warns_when_inbound_callers_have_no_queue() -> None:
    """queue_max = 0 means an inbound caller over a cap is turned away: warned."""
    text = stack_toml(extra="[inbound]\nqueue_max = 0\n")
    (warning,) = plan(build(text), HOUR_600, 180).warnings
    assert "no inbound queue" in warning and "queue_max = 0" in warning


def test_warns_when_outbound_calls_are_never_retried() -> None:
    """max_attempts = 1 drops outbound calls refused by a full layer: warned."""
    text = stack_toml(extra="[outbound]\nmax_attempts = 1\n")
    warnings = plan(build(text), HOUR_600, 180, direction="outbound").warnings
    assert any("no outbound retry" in warning for warning in warnings)


# ---------------------------------------------------------------------------- the report


DOCUMENT_KEYS = {
    "version", "config", "direction", "number", "account", "aht_s", "volume", "littles_law",
    "peak", "targets", "erlang", "requirement", "requirement_basis", "explanation", "path",
    "bottleneck", "headroom", "shortfall", "grade_at_bottleneck", "accounts", "rates", "fix",
    "campaign", "loadtest_command", "warnings",
}


def test_json_document_has_the_documented_keys() -> None:
    """The JSON keys are the stable, documented set, with the busy-hour ratio."""
    result = plan(build(stack_toml()), Volume(calls_per_day=3000), 180)
    document = to_document(result, "stack.toml")
    assert set(document) == DOCUMENT_KEYS
    assert set(document["volume"]) == {
        "kind", "calls_per_day", "calls_per_hour", "description", "hourly_calls",
        "average_calls_per_hour", "busy_hour", "busy_hour_calls", "busy_hour_ratio"}
    assert document["volume"]["busy_hour_ratio"] == 0.1
    assert set(document["fix"]) == {"needed", "changes", "total_monthly_cost", "complete",
                                    "unpriced"}
    grade = document["grade_at_bottleneck"]
    assert set(grade) == {"slots", "erlang_b", "erlang_c", "erlang_a",
                          "blocking", "p_wait", "service_level", "asa_s", "p_abandon"}
    assert set(grade["erlang_b"]) == {"blocking"}
    assert set(grade["erlang_c"]) == {"p_wait", "service_level", "asa_s", "occupancy", "stable"}
    assert set(grade["erlang_a"]) == {"patience_s", "p_wait", "service_level", "asa_answered_s",
                                      "mean_wait_all_s", "p_abandon", "occupancy"}
    assert set(document["targets"]) == {"blocking", "service_level", "answer_within_s",
                                        "patience_s", "patience_endless", "max_abandon"}
    assert set(document["path"][0]) == {"layer", "scope", "cap", "note", "headroom"}


def test_json_writes_an_unbounded_wait_as_null() -> None:
    """On 20 slots for 30 erlangs the Erlang C wait is infinite: JSON null, strict JSON."""
    result = plan(build(stack_toml(trunk_cap=20)), HOUR_600, 180)
    assert result.grade.asa_s == math.inf
    document = json.loads(json.dumps(to_document(result, "s.toml"), allow_nan=False))
    assert document["grade_at_bottleneck"]["asa_s"] is None


def _svg_of(page: str) -> ET.Element:
    match = re.search(r"<svg.*</svg>", page, re.DOTALL)
    assert match is not None
    return ET.fromstring(match.group(0))


def test_html_chart_has_one_series_per_cap_on_the_path() -> None:
    """The inline SVG holds one line per cap (gid cap-<i>), plus demand and requirement."""
    result = plan(build(WHOLE_STACK), Volume(profile=load_profile(EXAMPLE_PROFILE)), 180)
    svg = _svg_of(to_html(result, "stack.toml"))
    ids = [g.get("id", "") for g in svg.iter("{http://www.w3.org/2000/svg}g")]
    assert sorted(i for i in ids if i.startswith("cap-")) == sorted(
        f"cap-{index}" for index in range(len(result.path)))
    assert ids.count("demand") == 1 and ids.count("requirement") == 1


def test_html_is_self_contained() -> None:
    """No script, image or stylesheet is fetched: nothing but the page itself."""
    result = plan(build(stack_toml()), HOUR_600, 180)
    page = to_html(result, "stack.toml")
    assert not re.search(r"<(script|img|link|image)\b|src=|@import|url\(http", page)


def test_loadtest_command_tests_at_one_and_a_half_times_the_requirement() -> None:
    """The suggested load test passes the requirement as the peak and --factor 1.5."""
    result = plan(build(stack_toml()), HOUR_600, 180)
    assert result.loadtest_command("s.toml") == (
        "callgate loadtest --url http://127.0.0.1:8080 --config s.toml --peak 75 --aht 3m "
        "--factor 1.5 --duration 120 --speed 10")


# ----------------------------------------------------------------------------------- CLI


def test_cli_plans_the_example_stack_with_the_example_profile() -> None:
    """The README's command exits 0 and names openai-realtime as the bottleneck."""
    outcome = run_cli("--config", str(EXAMPLE_STACK), "--profile", str(EXAMPLE_PROFILE),
                      "--aht", "3m", "--blocking", "0.01")
    assert outcome.exit_code == 0, outcome.output
    assert "Lowest cap: provider openai-realtime, 25 concurrent calls." in outcome.output
    assert "callgate loadtest" in outcome.output


def test_cli_json_is_the_document(tmp_path: Path) -> None:
    """--json prints the document alone; --html writes the page beside it."""
    page = tmp_path / "plan.html"
    outcome = run_cli("--config", str(EXAMPLE_STACK), "--calls-per-hour", "600", "--aht", "3m",
                      "--json", "--html", str(page))
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(outcome.stdout)
    assert set(document) == DOCUMENT_KEYS
    assert document["littles_law"]["average_concurrency"] == pytest.approx(30.0)
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_cli_reads_the_config_from_the_environment() -> None:
    """CALLGATE_CONFIG stands in for --config."""
    outcome = CliRunner(env={"CALLGATE_CONFIG": str(EXAMPLE_STACK)}).invoke(
        plan_command, ["--calls-per-day", "1000", "--json"])
    assert outcome.exit_code == 0, outcome.output
    assert json.loads(outcome.stdout)["aht_s"] == 180.0  # the stack's handle_time


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--calls-per-hour", "600", "--aht", "3x"], "'--aht': '3x'"),
        (["--calls-per-hour", "600", "--blocking", "1.5"], "'--blocking': 1.5"),
        (["--calls-per-hour", "-1"], "'--calls-per-hour': -1"),
        (["--calls-per-hour", "600", "--patience", "-1s"], "'--patience': '-1s'"),
        (["--calls-per-hour", "600", "--answer-within", "soon"], "'--answer-within': 'soon'"),
        (["--calls-per-hour", "600", "--account", "nobody"], "'--account': 'nobody'"),
        (["--calls-per-hour", "600", "--number", "12"], "'--number': '12'"),
        (["--calls-per-hour", "600", "--number", "+15559999999"], "'--number': +15559999999"),
        (["--calls-per-hour", "600", "--direction", "sideways"], "'--direction': 'sideways'"),
        (["--calls-per-hour", "600", "--calls-per-day", "9"], "--calls-per-day and"),
        ([], "no call volume"),
    ],
)
def test_cli_bad_flag_exits_2_naming_it(args: list[str], named: str) -> None:
    """A bad value exits 2 with a message naming the flag, the value and what is accepted."""
    outcome = run_cli("--config", str(EXAMPLE_STACK), *args)
    assert outcome.exit_code == 2
    assert named in outcome.output


def test_cli_bad_profile_exits_2_naming_the_line(tmp_path: Path) -> None:
    """A profile with a bad row exits 2 naming --profile, the file and the line."""
    profile = tmp_path / "p.csv"
    profile.write_text("hour,calls\n0,5\n1,many\n", encoding="utf-8")
    outcome = run_cli("--config", str(EXAMPLE_STACK), "--profile", str(profile))
    assert outcome.exit_code == 2
    assert "'--profile'" in outcome.output and "line 3" in outcome.output


def test_cli_bad_stack_exits_2_listing_the_problem(tmp_path: Path) -> None:
    """An invalid stack prints its key path and exits 2."""
    bad = tmp_path / "bad.toml"
    bad.write_text(stack_toml(trunk_cap=0), encoding="utf-8")
    outcome = run_cli("--config", str(bad), "--calls-per-hour", "10")
    assert outcome.exit_code == 2
    assert "trunks.t1.max_concurrent" in outcome.output


def test_cli_html_without_matplotlib_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the plan extra, --html fails with the pip command to run, and no traceback."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    outcome = run_cli("--config", str(EXAMPLE_STACK), "--calls-per-hour", "60",
                      "--html", str(tmp_path / "p.html"))
    assert outcome.exit_code == 1
    assert "pip install 'callgate[plan]'" in outcome.output
    assert "Traceback" not in outcome.output


# ------------------------------------------------------------------------------ profiles


def test_profile_reads_csv_in_any_row_order() -> None:
    """A CSV profile of hour,calls rows gives the same 24 values as TOML."""
    rows = "\n".join(f"{hour},{hour * 2}" for hour in reversed(range(24)))
    profile = parse_profile(f"hour,calls\n{rows}\n", csv_format=True)
    assert profile.calls == tuple(float(hour * 2) for hour in range(24))
    assert (profile.busy_hour, profile.total) == (23, 552)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("calls = [1, 2, 3]", "expected 24 hourly values, got 3"),
        ("calls = " + str([0] * 24), "every hour has 0 calls"),
        ("calls = " + str([1] * 23 + [-1]), "hour 23: -1"),
        ("call = [1]", "unknown key(s) ['call']"),
    ],
)
def test_profile_errors_say_what_is_wrong(text: str, message: str) -> None:
    """A bad TOML profile raises ProfileError naming the problem."""
    with pytest.raises(ProfileError, match=re.escape(message)):
        parse_profile(text)


def test_profile_csv_needs_every_hour_once() -> None:
    """A CSV profile missing hours names them."""
    with pytest.raises(ProfileError, match=r"no row for hour\(s\) \[2, 3"):
        parse_profile("hour,calls\n0,1\n1,1\n", csv_format=True)


# ------------------------------------------------------------------------ the inputs


def test_volume_takes_exactly_one_of_its_forms() -> None:
    """A volume with two forms, or none, is refused."""
    with pytest.raises(ValueError, match="exactly one"):
        Volume(calls_per_day=10, calls_per_hour=1)
    with pytest.raises(ValueError, match="exactly one"):
        Volume()


def test_plan_refuses_a_peak_factor_below_one() -> None:
    """A peak below the average is not a peak: ValueError naming peak_factor."""
    with pytest.raises(ValueError, match="peak_factor"):
        plan(build(stack_toml()), HOUR_600, 180, peak_factor=0.5)


def test_agents_for_abandon_is_the_first_staffing_under_the_target() -> None:
    """agents_for_abandon agrees with a scan of erlang_a's abandonment from one agent up."""
    for traffic, patience in ((3.0, 30.0), (30.0, 60.0), (120.0, 200.0)):
        agents = 1
        while erlang_a(traffic, agents, 180, patience, 20).p_abandon > 0.05:
            agents += 1
        assert agents_for_abandon(traffic, 180, patience, 0.05) == agents


def test_plan_result_is_frozen() -> None:
    """A PlanResult is a value: assigning to it fails."""
    result: PlanResult = plan(build(stack_toml()), HOUR_600, 180)
    with pytest.raises(AttributeError):
        result.requirement = 1  # type: ignore[misc]
