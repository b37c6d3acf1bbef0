"""``callgate dial --simulate``: 10,000 contacts through 20 numbers at 30 calls/hour each."""

from __future__ import annotations

import math
from pathlib import Path

from tests.dialer.helpers import (
    placements_by,
    pool_stack,
    read_events,
    run_dial,
    worst_window,
    write_campaign,
    write_contacts,
)

CONTACTS = 10_000
NUMBERS = 20
PER_HOUR = 30


def _campaign(tmp_path: Path) -> Path:
    write_contacts(tmp_path / "contacts.csv",
                   ((f"+1212{5_000_000 + i}", "America/New_York", "true")
                    for i in range(CONTACTS)))
    return write_campaign(tmp_path, """
name = "big"
account = "acme"
caller_ids = "all"
contacts = "contacts.csv"
calling_hours = "00:00-24:00"
[dry_run]
answer = 1.0
talk_time = "2m"
seed = 3
""")


def test_ten_thousand_contacts_within_every_window_and_near_the_fastest_time(
        tmp_path: Path) -> None:
    """No number exceeds 30/h, each contact is placed once, done within 1.05x the minimum."""
    stack, ids = pool_stack(tmp_path, numbers=NUMBERS, per_hour=PER_HOUR)
    events_path = tmp_path / "events.jsonl"
    result = run_dial("--config", str(stack), "--campaign", str(_campaign(tmp_path)),
                      "--simulate", "--start", "2026-03-02T00:00:00+00:00",
                      "--events", str(events_path), "--json")
    assert result.exit_code == 0, result.output
    events = read_events(events_path)
    per_number = placements_by(events, "caller_id")
    assert set(per_number) <= set(ids)
    for number, times in per_number.items():
        assert worst_window(times, 3600.0) <= PER_HOUR, number
    per_contact = placements_by(events, "contact")
    assert sorted(per_contact) == list(range(1, CONTACTS + 1))
    assert all(len(times) == 1 for times in per_contact.values())
    assert {e["result"] for e in events} == {"answered"}
    every = sorted(t for times in per_number.values() for t in times)
    # The windows let 600 calls start per hour: the last batch can start no sooner than
    # (ceil(10000 / 600) - 1) hours after the first call.
    shortest = (math.ceil(CONTACTS / (NUMBERS * PER_HOUR)) - 1) * 3600.0
    took = every[-1] - every[0]
    assert shortest <= took <= 1.05 * shortest, (took, shortest)


def test_injected_inbound_calls_keep_their_reserved_room(tmp_path: Path) -> None:
    """With inbound traffic on the account, outbound never takes the reserved inbound room."""
    cap, reserved = 30, 10
    stack, _ = pool_stack(tmp_path, numbers=NUMBERS, per_hour=PER_HOUR, plan_cap=cap,
                          reserved=reserved)
    write_contacts(tmp_path / "contacts.csv",
                   ((f"+1212{5_000_000 + i}", "America/New_York", "true") for i in range(2000)))
    campaign = write_campaign(tmp_path, """
name = "mixed"
account = "acme"
caller_ids = "all"
contacts = "contacts.csv"
calling_hours = "00:00-24:00"
[dry_run]
answer = 1.0
talk_time = "3m"
""")
    events_path = tmp_path / "events.jsonl"
    result = run_dial("--config", str(stack), "--campaign", str(campaign), "--simulate",
                      "--inbound-calls-per-hour", "120", "--inbound-aht", "3m",
                      "--events", str(events_path), "--json")
    assert result.exit_code == 0, result.output
    import json

    summary = json.loads(result.output)
    inbound = summary["inbound"]
    assert inbound["offered"] > 300
    # outbound never held more than cap - reserved slots at once (judged from the events)
    edges = sorted((t, step) for e in read_events(events_path) if e.get("placed_at")
                   for t, step in ((e["placed_at"], 1), (e["ended_at"], -1)))
    level = peak = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        level += step
        peak = max(peak, level)
    assert peak <= cap - reserved
    assert peak == cap - reserved  # the campaign did fill the room it may use
    assert inbound["refused"] == {}
    assert inbound["admitted_at_once"] + inbound["admitted_after_queue"] >= inbound["offered"] - 2
