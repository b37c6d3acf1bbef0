"""kill -9 at seeded points, then resume: no try placed twice, every contact accounted for.

The dialler runs as a real process on a real SQLite gate store with the dry-run placer,
which appends each placed call to a file of its own (O_APPEND, fsync): the test judges by
that record and the state file, not by anything the dialler prints.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from tests.dialer.helpers import pool_stack, write_campaign, write_contacts

from callgate.dialer.scheduler import KILL_ENV

pytestmark = pytest.mark.slow
POINTS = ("before_place", "after_place", "after_record")
CONTACTS = 40


def _dial(tmp_path: Path, stack: Path, campaign: Path, kill: str | None
          ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    if kill is not None:
        env[KILL_ENV] = kill
    return subprocess.run(
        [sys.executable, "-m", "callgate.cli", "dial", "--config", str(stack),
         "--campaign", str(campaign), "--store", f"sqlite:///{tmp_path / 'gate.db'}",
         "--state", str(tmp_path / "state.db"), "--dry-run-log", str(tmp_path / "placed.log"),
         "--events", str(tmp_path / "events.jsonl"), "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_at_seeded_points_never_places_a_try_twice(tmp_path: Path, seed: int) -> None:
    """Killed (SIGKILL) at seeded points and restarted: each try placed at most once."""
    stack, _ = pool_stack(tmp_path, numbers=2, per_hour=1000, number_cap=50, plan_cap=200)
    write_contacts(tmp_path / "contacts.csv",
                   ((f"+1303{5_550_000 + i}", "UTC", "true") for i in range(CONTACTS)))
    campaign = write_campaign(tmp_path, """
name = "crashy"
account = "acme"
caller_ids = "all"
contacts = "contacts.csv"
calling_hours = "00:00-24:00"
max_tries = 3
[retry]
busy = "0s"
failed = "0s"
[dry_run]
answer = 0.5
busy = 0.3
failed = 0.2
talk_time = "20ms"
ring_time = "0s"
""")
    rng = random.Random(seed)
    fired: list[str] = []
    for _ in range(8):
        point = f"{rng.choice(POINTS)}:{rng.randint(1, 15)}"
        done = _dial(tmp_path, stack, campaign, point)
        if done.returncode == 0:
            break
        assert done.returncode == -9, done.stderr
        fired.append(point)
    else:
        done = _dial(tmp_path, stack, campaign, None)
    assert done.returncode == 0, done.stderr
    assert fired
    summary = json.loads(done.stdout)

    placed = [json.loads(line) for line in
              (tmp_path / "placed.log").read_text(encoding="utf-8").splitlines()]
    # the same (row, try) never reached the placer twice, whatever the run
    tries = Counter((p["row"], p["call_id"].split(":")[2].split("~")[0]) for p in placed)
    assert max(tries.values()) == 1
    assert len({p["call_id"] for p in placed}) == len(placed)

    db = sqlite3.connect(tmp_path / "state.db")
    statuses = dict(db.execute("SELECT status, COUNT(*) FROM contacts GROUP BY status"))
    states = dict(db.execute("SELECT call_id, state FROM tries").fetchall())
    per_row = Counter(row for (row,) in db.execute("SELECT row FROM tries"))
    db.close()
    assert statuses.get("pending", 0) == 0
    assert statuses.get("placed", 0) + statuses.get("unknown", 0) == CONTACTS
    assert summary["placed"] + summary["unknown"] == CONTACTS
    assert "placing" not in states.values()
    assert max(per_row.values()) <= 3
    logged = {p["call_id"] for p in placed}
    # every try with a result was placed exactly once; an unknown one at most once
    assert {c for c, s in states.items() if s != "unknown"} <= logged
    assert logged <= set(states)
    # the events file, caught up after each crash, has one line per try, never two
    lines = Counter(json.loads(line)["call_id"] for line in
                    (tmp_path / "events.jsonl").read_text(encoding="utf-8").splitlines())
    assert set(lines) == set(states) and max(lines.values()) == 1
    # a kill between 'placing' and the result leaves exactly that many unknown tries
    mid_try = sum(1 for point in fired if not point.startswith("after_record"))
    assert Counter(states.values())["unknown"] == mid_try
    assert statuses.get("unknown", 0) == mid_try


def test_sigterm_stops_cleanly_frees_its_leases_and_resumes(tmp_path: Path) -> None:
    """SIGTERM mid-campaign: exit 130, the dry-run calls' slots are free, a rerun resumes."""
    import time

    stack, _ = pool_stack(tmp_path, numbers=2, per_hour=1000, number_cap=50, plan_cap=200)
    write_contacts(tmp_path / "contacts.csv",
                   ((f"+1303{5_550_000 + i}", "UTC", "true") for i in range(6)))
    campaign = write_campaign(tmp_path, """
name = "long"
account = "acme"
caller_ids = "all"
contacts = "contacts.csv"
calling_hours = "00:00-24:00"
[dry_run]
answer = 1.0
talk_time = "1h"
""")
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    store = f"sqlite:///{tmp_path / 'gate.db'}"
    args = [sys.executable, "-m", "callgate.cli", "dial", "--config", str(stack),
            "--campaign", str(campaign), "--store", store, "--state", str(tmp_path / "s.db"),
            "--dry-run-log", str(tmp_path / "placed.log"), "--json"]
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    log = tmp_path / "placed.log"
    deadline = time.monotonic() + 60
    while not (log.exists() and len(log.read_text().splitlines()) == 6):
        assert time.monotonic() < deadline, "the dialler placed nothing within 60 s"
        time.sleep(0.05)  # waiting for a real process, with a deadline
    assert _in_use(stack, store) == 6  # six hour-long dry-run calls hold the account
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "run the same command again" in err
    assert _in_use(stack, store) == 0
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert (summary["placed"], summary["placements_this_run"]) == (6, 0)


def _in_use(stack: Path, store: str) -> int:
    """Slots the account holds in the gate's SQLite store now."""
    import time

    from callgate.config import load_stack
    from callgate.gate import Gate
    from callgate.stores import open_store
    from callgate.testing import FakeClock

    spec = load_stack(stack)
    gate_store = open_store(store, Gate.limits_for(spec))
    try:
        usage = Gate(spec, gate_store, FakeClock(time.time())).usage()
    finally:
        gate_store.close()
    return sum(row["in_use"] for row in usage["layers"] if row["layer"] == "account")
