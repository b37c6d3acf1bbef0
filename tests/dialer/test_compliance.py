"""Calling rules, judged from the events file: hours, days, consent, DNC, retries, max_tries."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.dialer.helpers import pool_stack, read_events, run_dial, write_campaign

ZONES = ["America/New_York", "America/Los_Angeles", "Asia/Tokyo", "Europe/Berlin",
         "Australia/Sydney", "Pacific/Honolulu"]
RETRY_S = {"busy": 20 * 60.0, "no_answer": 3 * 3600.0, "failed": 3600.0}
MAX_TRIES = 3


def _contacts(tmp_path: Path) -> dict[int, tuple[str, str, bool]]:
    """240 rows over six zones; every 7th without consent, every 11th on the DNC list."""
    rows: dict[int, tuple[str, str, bool]] = {}
    lines = ["phone,timezone,consent,first_name"]
    dnc = ["phone"]
    for row in range(1, 241):
        phone, zone, consent = f"+1646{5_550_000 + row}", ZONES[row % len(ZONES)], row % 7 != 0
        if row == 240:  # the same number as row 1: a duplicate, skipped
            phone, zone = rows[1][0], rows[1][1]
        rows[row] = (phone, zone, consent)
        lines.append(f"{phone},{zone},{'true' if consent else 'false'},name{row}")
        if row % 11 == 0:
            dnc.append(phone)
    (tmp_path / "contacts.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "dnc.csv").write_text("\n".join(dnc) + "\n", encoding="utf-8")
    return rows


def test_nobody_is_called_outside_their_hours_days_consent_or_tries(tmp_path: Path) -> None:
    """Across six zones and a weekend: hours, days, consent, DNC, retry delays and max_tries."""
    stack, _ = pool_stack(tmp_path, numbers=3, per_hour=10)
    rows = _contacts(tmp_path)
    campaign = write_campaign(tmp_path, f"""
name = "rules"
account = "acme"
caller_ids = "all"
contacts = "contacts.csv"
dnc = "dnc.csv"
calling_hours = "09:00-17:00"
calling_days = ["mon", "tue", "wed", "thu", "fri"]
max_tries = {MAX_TRIES}
ring_timeout = "25s"
[retry]
busy = "20m"
no_answer = "3h"
failed = "1h"
[dry_run]
answer = 0.3
busy = 0.3
no_answer = 0.3
failed = 0.1
talk_time = "3m"
seed = 11
""")
    events_path = tmp_path / "events.jsonl"
    # A Friday afternoon in New York: the weekend comes before most rows are done.
    result = run_dial("--config", str(stack), "--campaign", str(campaign), "--simulate",
                      "--start", "2026-03-06T15:00:00-05:00", "--events", str(events_path),
                      "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    events = read_events(events_path)
    tries: dict[int, list[dict[str, object]]] = defaultdict(list)
    skipped: dict[int, str] = {}
    for event in events:
        row = int(event["contact"])
        if event["result"] == "skipped":
            assert "placed_at" not in event
            skipped[row] = str(event["reason"])
        else:
            tries[row].append(event)
    should_skip = {row for row, (phone, _, consent) in rows.items()
                   if not consent or row % 11 == 0 or row == 240}
    assert set(skipped) == should_skip
    assert not should_skip & set(tries)
    assert skipped[240] == "duplicate" and skipped[11] == "dnc" and skipped[7] == "no_consent"
    weekend_seen = False
    for row, placed in tries.items():
        zone = ZoneInfo(rows[row][1])
        placed.sort(key=lambda e: float(e["placed_at"]))  # type: ignore[arg-type]
        assert len(placed) <= MAX_TRIES
        for event in placed:
            local = datetime.fromtimestamp(float(event["placed_at"]), zone)  # type: ignore[arg-type]
            assert local.weekday() < 5, (row, local)
            assert 9 * 60 <= local.hour * 60 + local.minute < 17 * 60, (row, local)
        for before, after in pairwise(placed):
            assert before["result"] in RETRY_S  # nobody answered was called again
            earliest = float(before["ended_at"]) + RETRY_S[str(before["result"])]  # type: ignore[arg-type]
            assert float(after["placed_at"]) >= earliest  # type: ignore[arg-type]
            gap_days = (float(after["placed_at"]) - float(before["placed_at"])) / 86400  # type: ignore[arg-type]
            weekend_seen = weekend_seen or gap_days > 2
        last = placed[-1]
        assert last["result"] not in RETRY_S or len(placed) == MAX_TRIES
    assert weekend_seen  # some retry really waited over the weekend
    assert len(tries) + len(skipped) == len(rows)
    assert summary["pending"] == 0 and summary["unknown"] == 0
    assert summary["skipped"] == len(should_skip)
