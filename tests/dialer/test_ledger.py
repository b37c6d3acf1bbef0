"""The state file: placing before placing, unknown after a crash, one campaign per file."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.dialer.helpers import pool_stack, write_campaign, write_contacts

from callgate.config import load_stack
from callgate.dialer.campaign import Campaign, load_campaign
from callgate.dialer.ledger import Ledger, LedgerError


def _campaign(tmp_path: Path, phones: list[str]) -> Campaign:
    stack, _ = pool_stack(tmp_path, numbers=1)
    write_contacts(tmp_path / "contacts.csv", [(p, "UTC", "true") for p in phones])
    path = write_campaign(tmp_path, 'name = "l"\naccount = "acme"\ncaller_ids = "all"\n'
                                    'contacts = "contacts.csv"\n')
    return load_campaign(path, load_stack(stack))


def test_a_try_left_placing_becomes_unknown_and_closes_its_contact(tmp_path: Path) -> None:
    """After a crash mid-try, the restart records it unknown and never offers it again."""
    campaign = _campaign(tmp_path, ["+12125550100", "+12125550101"])
    ledger = Ledger(tmp_path / "s.db")
    ledger.start(campaign)
    ledger.begin_try(1, 1, "l:1:1", "+14155551000", 100.0)
    ledger.close()  # the process dies here: no result was written

    again = Ledger(tmp_path / "s.db")
    again.start(campaign)
    (left,) = again.recover(200.0)
    assert (left.call_id, left.state) == ("l:1:1", "unknown")
    assert [p.row for p in again.pending()] == [2]
    assert again.statuses()["unknown"] == 1
    assert again.call_id("l", 2, 1) == "l:2:1~2"  # a new run never reuses an id
    assert again.recover(300.0) == []
    again.close()


def test_a_state_file_of_another_contact_list_is_refused(tmp_path: Path) -> None:
    """Resuming against edited rows could call someone twice: the file is refused."""
    ledger = Ledger(tmp_path / "s.db")
    ledger.start(_campaign(tmp_path, ["+12125550100", "+12125550101"]))
    ledger.close()
    other = _campaign(tmp_path, ["+12125550101", "+12125550100"])
    again = Ledger(tmp_path / "s.db")
    with pytest.raises(LedgerError, match="different contact list"):
        again.start(other)
    again.close()
