"""The campaign file and its CSVs: every problem with file, line and column, nothing dialled."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.dialer.helpers import pool_stack, run_dial, write_campaign, write_contacts

from callgate.config import load_stack
from callgate.dialer.campaign import CampaignError, load_campaign

GOOD = """name = "c1"
account = "acme"
caller_ids = "all"
contacts = "contacts.csv"
"""


@pytest.fixture
def stack_path(tmp_path: Path) -> Path:
    path, _ = pool_stack(tmp_path, numbers=2)
    write_contacts(tmp_path / "contacts.csv", [("+12125550100", "America/New_York", "true")])
    return path


def _issues(path: Path, stack_path: Path) -> list[str]:
    with pytest.raises(CampaignError) as caught:
        load_campaign(path, load_stack(stack_path))
    return [str(issue) for issue in caught.value.issues]


def test_toml_problems_name_file_line_and_column(tmp_path: Path, stack_path: Path) -> None:
    """Each bad key is reported at its own line and the column where its value starts."""
    path = write_campaign(tmp_path, GOOD + """max_tries = 0
ring_timeout = "5s"
calling_hours = "20:00-09:00"
calling_days = ["mon", "funday"]
[retry]
busy = "soon"
[dry_run]
answer = 0.5
busy = 0.2
""")
    issues = _issues(path, stack_path)
    assert any(i.startswith(f"{path}:5:13: max_tries = 0") for i in issues), issues
    assert any(i.startswith(f"{path}:6:16: ring_timeout") and "at least 15s" in i
               for i in issues), issues
    assert any(i.startswith(f"{path}:7:17: calling_hours") and "start must be before" in i
               for i in issues), issues
    assert any(i.startswith(f"{path}:8:16: calling_days[1] = 'funday'") for i in issues), issues
    assert any(i.startswith(f"{path}:10:8: retry.busy = 'soon'") for i in issues), issues
    assert any(i.startswith(f"{path}:11:1: dry_run") and "sum to 1" in i
               for i in issues), issues


def test_toml_syntax_error_has_its_position(tmp_path: Path, stack_path: Path) -> None:
    """A TOML syntax error keeps tomllib's line and column."""
    path = write_campaign(tmp_path, GOOD + "max_tries = = 3\nring_timeout = 20\n")
    (issue,) = _issues(path, stack_path)
    assert issue.startswith(f"{path}:5:13: (syntax)"), issue
    unclosed = write_campaign(tmp_path, GOOD + "max_tries = [\n", "unclosed.toml")
    (issue,) = _issues(unclosed, stack_path)
    assert issue.startswith(f"{unclosed}:5:14: (syntax)"), issue


def test_stack_cross_checks(tmp_path: Path, stack_path: Path) -> None:
    """Unknown account, a number of no account, and a ring longer than dial_ttl are refused."""
    path = write_campaign(tmp_path, GOOD.replace('"all"', '["+14155551000", "+19995550000"]')
                          + 'ring_timeout = "2m"\n')
    issues = _issues(path, stack_path)
    assert any(":3:14: caller_ids = '+19995550000'" in i and "not a number of the stack" in i
               for i in issues), issues
    assert any(":5:16: ring_timeout" in i and "dial_ttl" in i for i in issues), issues
    other = write_campaign(tmp_path, GOOD.replace('"acme"', '"nobody"'), "other.toml")
    assert any(":2:11: account = 'nobody'" in i for i in _issues(other, stack_path))


def test_csv_problems_name_row_line_and_column(tmp_path: Path, stack_path: Path) -> None:
    """Every bad cell of every row, by line and column name, all in one report."""
    (tmp_path / "contacts.csv").write_text(
        "name,phone,timezone,consent\n"
        "a,+12125550100,America/New_York,true\n"
        "b,2125550101,America/New_York,true\n"
        "c,+12125550102,Mars/Olympus,yes\n"
        "d,+12125550103,UTC\n", encoding="utf-8")
    (tmp_path / "dnc.csv").write_text("number\n+12125550100\n", encoding="utf-8")
    path = write_campaign(tmp_path, GOOD + 'dnc = "dnc.csv"\n')
    issues = _issues(path, stack_path)
    contacts, dnc = tmp_path / "contacts.csv", tmp_path / "dnc.csv"
    assert f"{contacts}:3:2: phone = '2125550101'" in "\n".join(issues)
    assert any(i.startswith(f"{contacts}:4:3: timezone = 'Mars/Olympus'") for i in issues)
    assert any(i.startswith(f"{contacts}:4:4: consent = 'yes'") and "true or false" in i
               for i in issues)
    assert any(i.startswith(f"{contacts}:5:4: consent") and "fewer fields" in i
               for i in issues)
    assert any(i.startswith(f"{dnc}:1:1: (header)") and "phone" in i for i in issues)


def test_missing_contacts_file_is_reported_at_its_key(tmp_path: Path, stack_path: Path) -> None:
    """A CSV that cannot be read is reported at the key that names it."""
    path = write_campaign(tmp_path, GOOD.replace("contacts.csv", "nowhere.csv"))
    (issue,) = _issues(path, stack_path)
    assert issue.startswith(f"{path}:4:12: contacts") and "cannot read" in issue


def test_skips_are_counted_not_errors(tmp_path: Path, stack_path: Path) -> None:
    """No consent, DNC and repeated numbers are valid rows, each skipped with its reason."""
    write_contacts(tmp_path / "contacts.csv", [
        ("+12125550100", "America/New_York", "true"), ("+12125550101", "UTC", "FALSE"),
        ("+12125550102", "UTC", "true"), ("+12125550100", "UTC", "true")])
    (tmp_path / "dnc.csv").write_text("phone\n+12125550102\n", encoding="utf-8")
    path = write_campaign(tmp_path, GOOD + 'dnc = "dnc.csv"\n')
    campaign = load_campaign(path, load_stack(stack_path))
    assert [c.skip for c in campaign.contacts] == [None, "no_consent", "dnc", "duplicate"]
    assert campaign.caller_ids == ("+14155551000", "+14155551001")


def test_dial_with_a_bad_campaign_exits_2_and_dials_nobody(tmp_path: Path,
                                                           stack_path: Path) -> None:
    """The CLI prints every problem, exits 2, and writes no state file or events."""
    path = write_campaign(tmp_path, GOOD + "max_tries = -1\n")
    events = tmp_path / "events.jsonl"
    result = run_dial("--config", str(stack_path), "--campaign", str(path), "--simulate",
                      "--events", str(events))
    assert result.exit_code == 2
    assert "nothing was dialled" in result.output and "max_tries" in result.output
    assert "Traceback" not in result.output
    assert not events.exists()


def test_dial_refuses_a_private_memory_store_outside_simulation(tmp_path: Path,
                                                                 stack_path: Path) -> None:
    """memory:// would hide these calls from the serving gates: refused without --simulate."""
    path = write_campaign(tmp_path, GOOD)
    result = run_dial("--config", str(stack_path), "--campaign", str(path))
    assert result.exit_code == 2
    assert "memory:// is private" in result.output


def test_the_example_campaign_runs_in_simulation() -> None:
    """examples/campaign validates against examples/stack.toml and every row is accounted for."""
    import json

    root = Path(__file__).parents[2] / "examples"
    result = run_dial("--config", str(root / "stack.toml"), "--campaign",
                      str(root / "campaign" / "campaign.toml"), "--simulate",
                      "--start", "2026-03-02T08:00:00-05:00", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["skip_reasons"] == {"dnc": 1, "no_consent": 1, "duplicate": 1}
    assert summary["placed"] + summary["skipped"] == summary["contacts"] == 12


def test_extra_columns_are_passed_through_to_the_call() -> None:
    """Columns beyond phone, timezone and consent reach the placer with each contact."""
    root = Path(__file__).parents[2] / "examples"
    campaign = load_campaign(root / "campaign" / "campaign.toml",
                             load_stack(root / "stack.toml"))
    assert campaign.contacts[0].extra == {"first_name": "Ana", "reason": "annual check-up"}
    assert len(campaign.caller_ids) == 6 and campaign.dnc_count == 2
