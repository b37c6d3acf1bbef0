"""``serve --campaigns``: read-only campaign progress and opt-outs, under the API's tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.dialer.helpers import run_dial, write_campaign, write_contacts
from tests.served import Served, served

ADMIN, ACME, GLOBEX = "admin-token-1", "acme-token-1", "globex-token-1"
STACK = """
[gate]
lease_ttl = "30s"
store = "memory://"

[trunks.main]
max_concurrent = 50

[plans.big]
max_concurrent = 20

[accounts.acme]
plan = "big"

[accounts.globex]
plan = "big"

[numbers."+14155550100"]
account = "acme"
trunk = "main"
max_concurrent = 5

[numbers."+14155550200"]
account = "globex"
trunk = "main"
max_concurrent = 5

[[api.tokens]]
name = "ops"
admin = true
env = "CG_ADMIN"

[[api.tokens]]
name = "acme"
account = "acme"
env = "CG_ACME"

[[api.tokens]]
name = "globex"
account = "globex"
env = "CG_GLOBEX"
"""


def simulated(tmp_path: Path, stack: Path, name: str, account: str, rows: int) -> Path:
    """A state file of a finished simulated campaign of ``account``."""
    write_contacts(tmp_path / f"{name}.csv", ((f"+1212{5_000_000 + i}", "America/New_York",
                                               "true") for i in range(rows)))
    path = write_campaign(tmp_path, f"""
name = "{name}"
account = "{account}"
caller_ids = "all"
contacts = "{name}.csv"
calling_hours = "00:00-24:00"
[dry_run]
answer = 0.5
busy = 0.5
""", name=f"{name}.toml")
    state = tmp_path / f"{name}.dial.db"
    result = run_dial("--config", str(stack), "--campaign", str(path), "--simulate", "--start",
                      "2026-03-02T00:00:00+00:00", "--state", str(state), "--json")
    assert result.exit_code == 0, result.output
    return state


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[tuple[Served, dict[str, object]]]:
    stack = tmp_path / "stack.toml"
    stack.write_text(STACK, encoding="utf-8")
    spring = simulated(tmp_path, stack, "spring", "acme", 6)
    autumn = simulated(tmp_path, stack, "autumn", "globex", 4)
    summary = json.loads(run_dial("--config", str(stack), "--campaign",
                                  str(tmp_path / "spring.toml"), "--simulate", "--start",
                                  "2026-03-02T00:00:00+00:00", "--json").output)
    env = {"CG_ADMIN": ADMIN, "CG_ACME": ACME, "CG_GLOBEX": GLOBEX}
    with served(stack, tmp_path / "gate.db", tmp_path / "serve.log", env=env,
                args=["--campaigns", str(spring), "--campaigns", str(autumn)]) as server:
        yield server, summary


def get(server: Served, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(server.url + path, headers=headers, timeout=10)


def test_campaigns_are_listed_with_the_dialler_s_progress_per_token(
        gate: tuple[Served, dict[str, object]]) -> None:
    """Admin sees both campaigns; an account token only its own; the numbers match dial's."""
    server, summary = gate
    every = get(server, "/v1/campaigns", ADMIN).json()["campaigns"]
    assert sorted(c["name"] for c in every) == ["autumn", "spring"]
    own = get(server, "/v1/campaigns", ACME).json()["campaigns"]
    assert [c["name"] for c in own] == ["spring"]
    spring = get(server, "/v1/campaigns/spring", ACME).json()
    for key in ("contacts", "placed", "pending", "skipped", "unknown", "tries_by_result"):
        assert spring[key] == summary[key], key
    assert spring["account"] == "acme" and spring["running"] is False
    assert spring["paused"] is None and spring["abandonment"]["limit"] == 0.03


def test_another_account_s_campaign_answers_like_a_missing_one(
        gate: tuple[Served, dict[str, object]]) -> None:
    """An account token asking for another account's campaign gets 404; no token gets 401."""
    server, _ = gate
    hidden = get(server, "/v1/campaigns/autumn", ACME)
    missing = get(server, "/v1/campaigns/nope", ADMIN)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"] == "unknown_campaign"
    assert get(server, "/v1/campaigns", None).status_code == 401
    refused = httpx.post(f"{server.url}/v1/campaigns/autumn/optout", json={
        "phone": "+12125000001"}, headers={"Authorization": f"Bearer {ACME}"}, timeout=10)
    assert refused.status_code == 404


@pytest.mark.parametrize(("body", "field", "value"), [
    ({"phone": "12125000001"}, "body.phone", "12125000001"),
    ({"call_id": "spring:99:1"}, "body.call_id", "spring:99:1"),
    ({"number": "+12125000001"}, "body.number", "+12125000001"),
    ({}, "body", {}),
])
def test_a_bad_optout_body_names_the_field_and_value(
        gate: tuple[Served, dict[str, object]], body: dict[str, str], field: str,
        value: object) -> None:
    """A bad opt-out is a 422 naming the field and the value; nothing is added."""
    server, _ = gate
    answer = httpx.post(f"{server.url}/v1/campaigns/spring/optout", json=body,
                        headers={"Authorization": f"Bearer {ACME}"}, timeout=10)
    assert answer.status_code == 422
    detail = answer.json()["detail"][0]
    assert detail["field"] == field and detail["value"] == value, detail
    assert get(server, "/v1/campaigns/spring", ACME).json()["opted_out"] == 0


def test_an_optout_by_call_id_adds_the_called_number(
        gate: tuple[Served, dict[str, object]]) -> None:
    """The agent names its call; the number that call went to joins the campaign's DNC."""
    server, _ = gate
    answer = httpx.post(f"{server.url}/v1/campaigns/spring/optout",
                        json={"call_id": "spring:2:1"},
                        headers={"Authorization": f"Bearer {ACME}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"campaign": "spring", "phone": "+12125000001", "added": True}
    assert get(server, "/v1/campaigns/spring", ADMIN).json()["opted_out"] == 1


def test_the_campaign_routes_are_in_the_openapi(
        gate: tuple[Served, dict[str, object]]) -> None:
    """/docs documents the three campaign routes, secured, with their error answers."""
    server, _ = gate
    paths = httpx.get(f"{server.url}/openapi.json", timeout=10).json()["paths"]
    assert set(paths["/v1/campaigns"]) == {"get"}
    assert "404" in paths["/v1/campaigns/{name}"]["get"]["responses"]
    optout = paths["/v1/campaigns/{name}/optout"]["post"]
    assert {"404", "422"} <= set(optout["responses"]) and optout["security"]


def test_a_campaigns_file_that_cannot_be_opened_stops_serve_with_its_name(
        tmp_path: Path) -> None:
    """serve --campaigns in a missing directory exits 2 naming the file, no traceback."""
    import subprocess
    import sys

    stack = tmp_path / "stack.toml"
    stack.write_text(STACK.split("[[api.tokens]]")[0], encoding="utf-8")
    missing = tmp_path / "no" / "such.db"
    done = subprocess.run(
        [sys.executable, "-m", "callgate.cli", "serve", "--config", str(stack),
         "--campaigns", str(missing), "--port", "9"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"--campaigns: cannot open a state file: '{missing}'" in done.stderr
    assert "Traceback" not in done.stderr
