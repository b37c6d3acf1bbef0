"""``callgate dial --placer twilio`` against a Twilio stand-in and the real served gate."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.dialer.helpers import run_dial, write_campaign, write_contacts
from tests.dialer.twilio_standin import TwilioStandIn
from tests.served import served, served_app

SID, TOKEN = "AC" + "1" * 32, "twilio-auth-token"
OURS = "+14155550100"
OUTCOMES = {"+14155551001": "completed", "+14155551002": "abandoned",
            "+14155551003": "busy", "+14155551004": "no-answer", "+14155551005": "failed",
            "+14155551006": "canceled", "+14155551007": "machine",
            "+14155551008": "optout", "+14155551009": "rejected"}
STACK = f"""
[gate]
lease_ttl = "30s"
store = "memory://"

[trunks.main]
max_concurrent = 50

[plans.big]
max_concurrent = 20

[accounts.acme]
plan = "big"

[numbers."{OURS}"]
account = "acme"
trunk = "main"
max_concurrent = 20

[twilio]
auth_token_env = "TWILIO_AUTH_TOKEN"
stream_url = "wss://agent.test/stream"
"""


def campaign_body(api_url: str, gate_url: str, *, voicemail: str = "hangup") -> str:
    return f"""
name = "spring"
account = "acme"
caller_ids = "all"
contacts = "contacts.csv"
calling_hours = "00:00-24:00"
max_tries = 1
ring_timeout = "20s"
abandon_after = "20s"
voicemail = "{voicemail}"

[twilio]
gate_url = "{gate_url}"
api_url = "{api_url}"
machine_detection = "Enable"
"""


@pytest.fixture
def twilio_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)


@pytest.fixture
def standin() -> Iterator[tuple[TwilioStandIn, str]]:
    fake = TwilioStandIn(SID, TOKEN, OUTCOMES)
    with served_app(fake.app) as url:
        yield fake, url
        fake.join()


def tries(state: Path) -> dict[str, tuple[str, str]]:
    """phone -> (result, reason) of each try in the state file."""
    with sqlite3.connect(state) as db:
        rows = db.execute("SELECT c.phone, t.state, t.reason FROM tries t "
                          "JOIN contacts c ON c.row = t.row").fetchall()
    return {phone: (state_, reason) for phone, state_, reason in rows}


def test_every_outcome_reaches_the_campaign_through_signed_callbacks(
        tmp_path: Path, twilio_env: None, standin: tuple[TwilioStandIn, str]) -> None:
    """Each provider outcome comes back through the gate's signed webhooks as the try's
    result, every lease is released, and the agent's opt-out lands in the state file."""
    fake, api_url = standin
    stack = tmp_path / "stack.toml"
    stack.write_text(STACK, encoding="utf-8")
    write_contacts(tmp_path / "contacts.csv", [(p, "America/New_York", "true")
                                               for p in OUTCOMES])
    state, db = tmp_path / "spring.dial.db", tmp_path / "gate.db"
    with served(stack, db, tmp_path / "serve.log", env={"TWILIO_AUTH_TOKEN": TOKEN},
                args=["--campaigns", str(state)]) as gate:
        campaign = write_campaign(tmp_path, campaign_body(api_url, gate.url))
        result = run_dial("--config", str(stack), "--campaign", str(campaign), "--store",
                          f"sqlite:///{db}", "--state", str(state), "--placer", "twilio",
                          "--json")
        fake.join()
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output)
        usage = httpx.get(f"{gate.url}/v1/usage").json()
        view = httpx.get(f"{gate.url}/v1/campaigns/spring").json()
        log = gate.output()
    # the REST requests: Twilio's wire format, our webhooks, the ring timeout, AMD
    assert fake.auth_failures == 0
    first = fake.calls[0].form
    call_id = first["Url"].split("call_id=")[1]
    assert first["Url"].startswith(f"{gate.url}/twilio/outbound?call_id=spring%3A")
    assert first["StatusCallback"] == f"{gate.url}/twilio/status?call_id={call_id}"
    assert first["Timeout"] == "20" and first["MachineDetection"] == "Enable"
    assert first["StatusCallbackEvent"] == "initiated"  # the first of the repeated field
    # every webhook the stand-in signed was accepted
    assert all(status < 300 for call in fake.calls for _, status, _ in call.answers), \
        [a for call in fake.calls for a in call.answers]
    got = tries(state)
    assert {phone: result for phone, (result, _) in got.items()} == {
        "+14155551001": "answered", "+14155551002": "abandoned", "+14155551003": "busy",
        "+14155551004": "no_answer", "+14155551005": "failed", "+14155551006": "failed",
        "+14155551007": "machine", "+14155551008": "answered", "+14155551009": "failed"}
    assert "canceled" in got["+14155551006"][1]
    assert "21211" in got["+14155551009"][1]  # Twilio refused it: nothing rang
    assert "hung up" in got["+14155551007"][1]
    # the agent's start: the stream's status callback for one call, the first renew for another
    completed = next(c for c in fake.calls if c.outcome == "completed")
    assert [url.split("?")[0] for url, _, _ in completed.answers] == [
        f"{gate.url}/twilio/outbound", f"{gate.url}/twilio/stream", f"{gate.url}/twilio/status"]
    optout = next(c for c in fake.calls if c.outcome == "optout")
    assert "/renew" in optout.answers[1][0]
    machine = next(c for c in fake.calls if c.outcome == "machine")
    assert "<Hangup" in machine.answers[0][2] and "<Stream" not in machine.answers[0][2]
    # every lease went back, through the status callbacks (the dialler released none)
    assert all(layer["in_use"] == 0 for layer in usage["layers"]), usage
    for call in fake.calls:
        lease = call.form["Url"].split("call_id=")[1].replace("%3A", ":")
        assert f"for {lease} (acme): released=True" in log, lease
    assert summary["tries_by_result"]["abandoned"] == 1
    assert summary["abandonment"] == {"answered": 3, "abandoned": 1, "rate": 0.3333,
                                      "limit": 0.03, "min_answered": 100}
    # the agent's opt-out: on the campaign's do-not-call list, shown on the API
    with sqlite3.connect(state) as sdb:
        assert sdb.execute("SELECT phone FROM optouts").fetchall() == [("+14155551008",)]
    assert view["opted_out"] == 1 and view["placed"] == 9 and view["pending"] == 0
    assert view["running"] is False


def test_a_machine_left_to_the_agent_is_connected(
        tmp_path: Path, twilio_env: None, standin: tuple[TwilioStandIn, str]) -> None:
    """With voicemail = "agent" a machine-answered call is connected to the agent's stream."""
    fake, api_url = standin
    fake.outcomes = {"+14155551007": "machine"}
    stack = tmp_path / "stack.toml"
    stack.write_text(STACK, encoding="utf-8")
    write_contacts(tmp_path / "contacts.csv", [("+14155551007", "America/New_York", "true")])
    state, db = tmp_path / "spring.dial.db", tmp_path / "gate.db"
    with served(stack, db, tmp_path / "serve.log", env={"TWILIO_AUTH_TOKEN": TOKEN},
                args=["--campaigns", str(state)]) as gate:
        campaign = write_campaign(tmp_path, campaign_body(api_url, gate.url,
                                                          voicemail="agent"))
        result = run_dial("--config", str(stack), "--campaign", str(campaign), "--store",
                          f"sqlite:///{db}", "--state", str(state), "--placer", "twilio",
                          "--json")
        fake.join()
    assert result.exit_code == 0, result.output
    assert "<Stream" in fake.calls[0].answers[0][2]
    assert tries(state)["+14155551007"][0] == "machine"
    assert "left to the agent" in tries(state)["+14155551007"][1]


def test_placer_twilio_without_its_settings_is_refused_before_dialling(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No [twilio] table, or its credentials' variables unset: exit 2 naming what is missing."""
    monkeypatch.delenv("TWILIO_ACCOUNT_SID", raising=False)
    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    stack = tmp_path / "stack.toml"
    stack.write_text(STACK.replace('store = "memory://"', f'store = "sqlite:///{tmp_path}/g.db"'),
                     encoding="utf-8")
    write_contacts(tmp_path / "contacts.csv", [("+14155551001", "America/New_York", "true")])
    body = campaign_body("http://127.0.0.1:9", "http://127.0.0.1:9")
    bare = write_campaign(tmp_path, body.split("[twilio]")[0], name="bare.toml")
    result = run_dial("--config", str(stack), "--campaign", str(bare), "--placer", "twilio",
                      "--state", str(tmp_path / "s.db"))
    assert result.exit_code == 2
    assert "needs a [twilio] table" in result.output
    full = write_campaign(tmp_path, body)
    result = run_dial("--config", str(stack), "--campaign", str(full), "--placer", "twilio",
                      "--state", str(tmp_path / "s.db"))
    assert result.exit_code == 2
    assert "['TWILIO_ACCOUNT_SID', 'TWILIO_AUTH_TOKEN'] not set" in result.output


def test_abandoned_calls_through_the_gate_pause_the_campaign(
        tmp_path: Path, twilio_env: None, standin: tuple[TwilioStandIn, str]) -> None:
    """Agents that never start: once abandon_min_answered calls were answered over the
    limit, the dialler places nothing more and says why."""
    fake, api_url = standin
    phones = [f"+1415555{2000 + i}" for i in range(6)]
    fake.outcomes = dict.fromkeys(phones, "abandoned")
    stack = tmp_path / "stack.toml"
    stack.write_text(STACK.replace("max_concurrent = 20\n\n[twilio]",
                                   "max_concurrent = 1\n\n[twilio]"), encoding="utf-8")
    write_contacts(tmp_path / "contacts.csv", [(p, "America/New_York", "true") for p in phones])
    state, db = tmp_path / "spring.dial.db", tmp_path / "gate.db"
    with served(stack, db, tmp_path / "serve.log", env={"TWILIO_AUTH_TOKEN": TOKEN},
                args=["--campaigns", str(state)]) as gate:
        body = campaign_body(api_url, gate.url).replace(
            'abandon_after = "20s"', 'abandon_after = "20s"\nabandon_min_answered = 2\n'
                                     'abandon_limit = 0.5')
        campaign = write_campaign(tmp_path, body)
        result = run_dial("--config", str(stack), "--campaign", str(campaign), "--store",
                          f"sqlite:///{db}", "--state", str(state), "--placer", "twilio",
                          "--json")
        fake.join()
        view = httpx.get(f"{gate.url}/v1/campaigns/spring").json()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert len(fake.calls) == 2 and summary["placements_this_run"] == 2
    assert summary["tries_by_result"] == {"abandoned": 2} and summary["pending"] == 4
    assert "abandonment rate 100.0%" in summary["paused"]
    assert view["paused"] == summary["paused"]
