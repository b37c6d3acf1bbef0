"""Abandonment pacing, the 72-hour rule, machines and opt-outs, in virtual time (dry run)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from tests.dialer.helpers import pool_stack, read_events, run_dial, write_campaign, write_contacts

from callgate.dialer.campaign import CampaignError, load_campaign
from callgate.dialer.shared import StateFile

START = "2026-03-02T00:00:00+00:00"
HOUR = 3600.0


def campaign(tmp_path: Path, contacts: int, extra: str, dry_run: str) -> Path:
    write_contacts(tmp_path / "contacts.csv",
                   ((f"+1212{5_000_000 + i}", "America/New_York", "true")
                    for i in range(contacts)))
    return write_campaign(tmp_path, f"""
name = "paced"
account = "acme"
caller_ids = "all"
contacts = "contacts.csv"
calling_hours = "00:00-24:00"
{extra}
[dry_run]
answer = 1.0
talk_time = "1m"
ring_time = "5s"
seed = 5
{dry_run}
""")


def simulate(stack: Path, path: Path, *args: str, start: str = START) -> dict[str, object]:
    result = run_dial("--config", str(stack), "--campaign", str(path), "--simulate",
                      "--start", start, "--json", *args)
    assert result.exit_code == 0, result.output
    summary: dict[str, object] = json.loads(result.output)
    return summary


def test_an_abandon_rate_over_the_limit_pauses_and_nothing_more_is_placed(
        tmp_path: Path) -> None:
    """Once min_answered calls were answered at >= the limit, no call is placed; a later
    run stays paused and only --resume dials again."""
    stack, _ = pool_stack(tmp_path, numbers=5, per_hour=1000, number_cap=2)
    path = campaign(tmp_path, 300, "abandon_min_answered = 20\nabandon_limit = 0.1",
                    "abandon = 0.3")
    events, state = tmp_path / "events.jsonl", tmp_path / "paced.db"
    summary = simulate(stack, path, "--events", str(events), "--state", str(state))
    assert summary["paused"] and "abandonment rate" in str(summary["paused"])
    assert summary["pending"] > 0  # type: ignore[operator]
    tries = [e for e in read_events(events) if e["result"] != "skipped"]
    ended = sorted((e["ended_at"], e["result"]) for e in tries)
    for placed in sorted(e["placed_at"] for e in tries):
        known = [r for at, r in ended if at <= placed and r in ("answered", "abandoned")]
        rate = known.count("abandoned") / len(known) if known else 0.0
        assert not (len(known) >= 20 and rate >= 0.1), (placed, len(known), rate)
    final = [r for _, r in ended if r in ("answered", "abandoned")]
    assert len(final) >= 20 and final.count("abandoned") / len(final) >= 0.1
    # the pause is kept in the state file: running again places nothing ...
    again = simulate(stack, path, "--state", str(state))
    assert again["placements_this_run"] == 0 and again["paused"]
    # ... until an operator resumes it (the window then starts again)
    resumed = simulate(stack, path, "--state", str(state), "--resume",
                       start="2026-03-09T00:00:00+00:00")
    assert resumed["placements_this_run"] > 0  # type: ignore[operator]


def test_a_pause_lifts_by_itself_once_the_abandons_leave_the_30_day_window(
        tmp_path: Path) -> None:
    """A run 31 days after the pause dials again without --resume (the rate fell back)."""
    stack, _ = pool_stack(tmp_path, numbers=5, per_hour=1000, number_cap=2)
    path = campaign(tmp_path, 300, "abandon_min_answered = 20\nabandon_limit = 0.1",
                    "abandon = 0.3")
    state = tmp_path / "paced.db"
    assert simulate(stack, path, "--state", str(state))["paused"]
    assert simulate(stack, path, "--state", str(state),
                    start="2026-03-20T00:00:00+00:00")["placements_this_run"] == 0
    later = simulate(stack, path, "--state", str(state), start="2026-04-03T00:00:00+00:00")
    assert later["placements_this_run"] > 0  # type: ignore[operator]


def test_an_abandoned_contact_is_not_called_again_within_72_hours(tmp_path: Path) -> None:
    """Every abandoned try's next try starts at least 72 h after it ended (virtual time)."""
    stack, _ = pool_stack(tmp_path, numbers=2, per_hour=1000)
    path = campaign(tmp_path, 20, "max_tries = 2\n[retry]\nabandoned = \"72h\"",
                    "abandon = 1.0")
    events = tmp_path / "events.jsonl"
    summary = simulate(stack, path, "--events", str(events))
    assert summary["tries_by_result"] == {"abandoned": 40}
    by_contact: dict[int, list[dict[str, float]]] = {}
    for event in read_events(events):
        by_contact.setdefault(int(event["contact"]), []).append(event)
    for contact, tries in by_contact.items():
        first, second = sorted(tries, key=lambda e: e["placed_at"])
        assert second["placed_at"] - first["ended_at"] >= 72 * HOUR, contact


def test_machines_follow_the_voicemail_policy(tmp_path: Path) -> None:
    """dry_run machine: 'hangup' retries the contact later; 'agent' leaves it closed."""
    stack, _ = pool_stack(tmp_path, numbers=2, per_hour=1000)
    path = campaign(tmp_path, 10, "max_tries = 2", "machine = 1.0")
    assert simulate(stack, path)["tries_by_result"] == {"machine": 20}
    path = campaign(tmp_path, 10, 'max_tries = 2\nvoicemail = "agent"', "machine = 1.0")
    assert simulate(stack, path)["tries_by_result"] == {"machine": 10}


def test_an_opted_out_number_is_never_placed_and_joins_the_dnc_csv(tmp_path: Path) -> None:
    """A number the gate recorded as opted out is skipped (opted_out) and appended to the
    campaign's dnc CSV, so the next campaign on that list skips it too."""
    stack, _ = pool_stack(tmp_path, numbers=2, per_hour=1000)
    (tmp_path / "dnc.csv").write_text("phone,note\n+19995550000,old", encoding="utf-8")
    path = campaign(tmp_path, 5, 'dnc = "dnc.csv"', "")
    state = tmp_path / "paced.db"
    StateFile(state).opt_out("+12125000002", 0.0, None)
    summary = simulate(stack, path, "--state", str(state))
    assert summary["skip_reasons"] == {"opted_out": 1}
    assert summary["placed"] == 4 and summary["opted_out_this_run"] == 1
    assert summary["dnc_write_error"] is None
    assert (tmp_path / "dnc.csv").read_text(encoding="utf-8").splitlines() == [
        "phone,note", "+19995550000,old", "+12125000002,"]
    fresh = simulate(stack, path)  # a new state file: the CSV now skips it
    assert fresh["skip_reasons"] == {"dnc": 1} and fresh["placed"] == 4
    with sqlite3.connect(state) as db:
        placed = {p for (p,) in db.execute(
            "SELECT c.phone FROM tries t JOIN contacts c ON c.row = t.row")}
    assert "+12125000002" not in placed


@pytest.mark.parametrize(("line", "where", "value"), [
    ("abandon_limit = 1.5", "abandon_limit", "1.5"),
    ('voicemail = "beep"', "voicemail", "'beep'"),
    ('abandon_after = "soon"', "abandon_after", "'soon'"),
    ('[retry]\nabandoned = "1h"', "retry.abandoned", "'1h': must be at least 72h"),
    ('[twilio]\ngate_url = "https://g.example"\nmachine_detection = "maybe"',
     "twilio.machine_detection", "'maybe'"),
    ('[twilio]\ngate_url = "not a url"', "twilio.gate_url", "'not a url'"),
])
def test_a_bad_pacing_or_twilio_field_names_the_field_and_value(
        tmp_path: Path, line: str, where: str, value: str) -> None:
    """Each bad new key is reported with its dotted name and the value given."""
    stack, _ = pool_stack(tmp_path, numbers=1)
    path = campaign(tmp_path, 1, "", "")
    text = path.read_text(encoding="utf-8").replace("[dry_run]", f"{line}\n[dry_run]")
    path.write_text(text, encoding="utf-8")
    from callgate.config import load_stack

    with pytest.raises(CampaignError) as caught:
        load_campaign(path, load_stack(stack))
    assert f"{where} = {value}" in str(caught.value)


def test_dry_run_machine_and_abandon_above_one_is_refused(tmp_path: Path) -> None:
    """machine + abandon are shares of the answered calls: more than 1 is an error."""
    stack, _ = pool_stack(tmp_path, numbers=1)
    path = campaign(tmp_path, 1, "", "machine = 0.6\nabandon = 0.6")
    from callgate.config import load_stack

    with pytest.raises(CampaignError) as caught:
        load_campaign(path, load_stack(stack))
    assert "machine + abandon" in str(caught.value) and "dry_run" in str(caught.value)


def test_a_call_still_ringing_at_a_restart_is_resolved_from_the_gate_s_facts(
        tmp_path: Path) -> None:
    """A try the provider took before the dialler stopped is never placed again; the next
    run reads its result from the facts the gate wrote meanwhile."""
    from callgate.config import load_stack
    from callgate.dialer.ledger import Ledger

    stack, ids = pool_stack(tmp_path, numbers=2, per_hour=1000)
    path = campaign(tmp_path, 3, "", "")
    state = tmp_path / "paced.db"
    ledger = Ledger(state)
    ledger.start(load_campaign(path, load_stack(stack)))
    placed = 1_772_409_600.0  # START
    ledger.begin_try(1, 1, "paced:1:1", ids[0], placed)
    ledger.mark_sent("paced:1:1", "CA1")
    ledger.close()
    gate_side = StateFile(state)
    gate_side.record("paced:1:1", "answered", placed + 5)
    gate_side.record("paced:1:1", "agent", placed + 5.5)
    gate_side.record("paced:1:1", "status", placed + 60, status="completed")
    summary = simulate(stack, path, "--state", str(state))
    with sqlite3.connect(state) as db:
        first = db.execute("SELECT call_id, state, ended_at FROM tries WHERE row = 1").fetchall()
    assert first == [("paced:1:1", "answered", placed + 60)]
    assert summary["placements_this_run"] == 2 and summary["placed"] == 3
