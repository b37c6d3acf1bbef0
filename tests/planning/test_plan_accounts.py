"""A plan per account, each account's own lowest cap in the whole-stack plan, campaigns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from callgate.config import load_stack
from callgate.errors import UnknownAccountError
from callgate.planning.command import plan as plan_command
from callgate.planning.plan import Volume, plan
from callgate.planning.report import sections, to_document

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_STACK = str(ROOT / "examples" / "stack.toml")


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(plan_command, ["--config", EXAMPLE_STACK, *args])


def test_account_plan_walks_its_own_path_and_finds_its_plan_the_bottleneck() -> None:
    """bright-dental's own path: its 4 numbers, carrier-west, its starter plan (5), the
    shared pools; the plan is the lowest cap and the fix moves it to growth."""
    result = plan(load_stack(EXAMPLE_STACK), Volume(calls_per_hour=60), 180,
                  account="bright-dental")
    layers = {row.layer: row for row in result.path}
    assert layers["number"].cap == 16 and layers["trunk"].scope == "carrier-west"
    assert "shared with acme-clinics" in layers["trunk"].note
    assert (result.bottleneck.layer, result.bottleneck.scope, result.bottleneck.cap) == (
        "account", "bright-dental", 5)
    assert [c.action for c in result.fix.changes] == ["bright-dental: plan starter -> growth"]
    assert result.accounts == ()


def test_account_plan_json_names_the_account() -> None:
    """--account NAME --json: "account" is NAME, "number" null, the bottleneck its plan."""
    outcome = run_cli("--account", "bright-dental", "--calls-per-hour", "60", "--aht", "3m",
                      "--json")
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(outcome.stdout)
    assert (document["account"], document["number"]) == ("bright-dental", None)
    assert document["bottleneck"]["scope"] == "bright-dental" and document["accounts"] == []


def test_unknown_account_is_refused_naming_the_accounts() -> None:
    """An account the stack lacks raises UnknownAccountError; the CLI exits 2 naming it."""
    with pytest.raises(UnknownAccountError, match="acme-clinics"):
        plan(load_stack(EXAMPLE_STACK), Volume(calls_per_hour=60), 180, account="nobody")
    outcome = run_cli("--account", "nobody", "--calls-per-hour", "60")
    assert outcome.exit_code == 2 and "'--account'" in outcome.output
    both = run_cli("--account", "bright-dental", "--number", "+13125550110",
                   "--calls-per-hour", "60")
    assert both.exit_code == 2 and "cannot be combined" in both.output


def test_whole_stack_plan_lists_each_accounts_own_lowest_cap() -> None:
    """The whole-stack plan names provider openai-realtime (25) stack-wide, and beside it
    bright-dental's own lowest cap, its starter plan at 5, flagged as below it."""
    result = plan(load_stack(EXAMPLE_STACK), Volume(calls_per_hour=600), 180)
    assert result.bottleneck.scope == "openai-realtime"
    own = {a.account: a for a in result.accounts}
    assert (own["bright-dental"].lowest.layer, own["bright-dental"].lowest.cap) == (
        "account", 5)
    assert own["bright-dental"].numbers == 4 and own["acme-clinics"].numbers == 6
    rows = to_document(result, "stack.toml")["accounts"]
    dental = next(r for r in rows if r["account"] == "bright-dental")
    assert dental["below_stack_bottleneck"] is True
    assert "--account bright-dental" in dental["command"]
    section = next(s for s in sections(result) if s.title.startswith("Each account"))
    assert section.marked is not None and section.rows[section.marked][0] == "bright-dental"
    text = run_cli("--calls-per-hour", "600", "--aht", "3m").output
    assert "Each account's own lowest cap" in text and "bright-dental" in text


def test_campaign_says_which_layers_cannot_carry_its_concurrency() -> None:
    """900 calls/h x 3m = 45 at once from acme-clinics' pool: its plan (25 - 5 reserved),
    openai-realtime (25), deepgram (40) and db (40) cannot carry it; the trunks can."""
    result = plan(load_stack(EXAMPLE_STACK), Volume(calls_per_hour=900), 180,
                  direction="outbound", account="acme-clinics", campaign_calls_per_hour=900)
    campaign = result.campaign
    assert campaign is not None and campaign.concurrency == pytest.approx(45.0)
    assert [(c.layer, c.scope, c.cap) for c in campaign.blocked_by] == [
        ("account", "acme-clinics", 20), ("provider", "openai-realtime", 25),
        ("provider", "deepgram", 40), ("resource", "db", 40)]
    document = to_document(result, "stack.toml")["campaign"]
    assert document["blocked_by"] == ["acme-clinics", "openai-realtime", "deepgram", "db"]
    last = sections(result)[-1]
    assert "cannot carry" in last.notes[1].lower() and "acme-clinics (20 < 45)" in last.notes[1]


def test_campaign_that_fits_says_so() -> None:
    """A small campaign (60 calls/h = 3 at once) fits every layer: nothing blocks it."""
    result = plan(load_stack(EXAMPLE_STACK), Volume(calls_per_hour=60), 180,
                  direction="outbound", number="+14155550100", campaign_calls_per_hour=60)
    assert result.campaign is not None and result.campaign.blocked_by == ()
    assert sections(result)[-1].notes[1] == "Every other layer on the path carries it."
