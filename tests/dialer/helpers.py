"""Writing stacks, campaigns and contact lists for the dialler's tests, and reading events."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from callgate.dialer.command import dial


def pool_stack(directory: Path, *, numbers: int = 20, per_hour: int = 30, plan_cap: int = 100,
               reserved: int = 0, number_cap: int = 10, extra: str = "") -> tuple[Path, list[str]]:
    """A stack whose account ``acme`` has ``numbers`` caller numbers at ``per_hour`` each."""
    ids = [f"+1415555{1000 + i}" for i in range(numbers)]
    lines = [
        '[gate]\nstore = "memory://"\nlease_ttl = "30s"\n',
        "[trunks.main]\nmax_concurrent = 1000\n",
        f"[plans.big]\nmax_concurrent = {plan_cap}\n",
        f'[accounts.acme]\nplan = "big"\nreserved_inbound = {reserved}\n',
        "[number_defaults]\n"
        f"max_concurrent = {number_cap}\n"
        f'windows = [{{ direction = "outbound", limit = {per_hour}, per = "1h" }}]\n',
    ]
    lines += [f'[numbers."{n}"]\naccount = "acme"\ntrunk = "main"\n' for n in ids]
    path = directory / "stack.toml"
    path.write_text("\n".join(lines) + extra, encoding="utf-8")
    return path, ids


def write_contacts(path: Path, rows: Iterable[tuple[str, str, str]]) -> Path:
    path.write_text("phone,timezone,consent\n" + "".join(f"{p},{z},{c}\n" for p, z, c in rows),
                    encoding="utf-8")
    return path


def write_campaign(directory: Path, body: str, name: str = "campaign.toml") -> Path:
    path = directory / name
    path.write_text(body, encoding="utf-8")
    return path


def run_dial(*args: str) -> Result:
    return CliRunner().invoke(dial, list(args), catch_exceptions=False)


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def placements_by(events: list[dict[str, Any]], key: str) -> dict[Any, list[float]]:
    """placed_at times of every placed try, grouped by ``key`` (e.g. caller_id, contact)."""
    out: dict[Any, list[float]] = defaultdict(list)
    for event in events:
        if event.get("placed_at") is not None and event["result"] != "skipped":
            out[event[key]].append(event["placed_at"])
    return {k: sorted(v) for k, v in out.items()}


def worst_window(times: list[float], period_s: float) -> int:
    """The most placements in any half-open span (t - period, t] (the gate's sliding log)."""
    worst, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - period_s:
            start += 1
        worst = max(worst, end - start + 1)
    return worst
