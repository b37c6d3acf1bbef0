"""The dialler through its Python API: a failing placer, and the gate's refusals obeyed."""

from __future__ import annotations

from pathlib import Path

from tests.dialer.helpers import pool_stack, write_campaign, write_contacts

from callgate.config import load_stack
from callgate.dialer.campaign import load_campaign
from callgate.dialer.ledger import Ledger
from callgate.dialer.placers import Attempt, Placement
from callgate.dialer.scheduler import Dialer, VirtualTimer
from callgate.testing import FakeClock, memory_gate


class FlakyPlacer:
    """Raises for row 2 (as a carrier API might mid-request); answers everyone else."""

    name = "flaky"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def place(self, attempt: Attempt) -> Placement:
        self.asked.append(attempt.call_id)
        if attempt.row == 2:
            raise ConnectionError("carrier API timed out")
        return Placement("answered", "ok", 1.0, 30.0)

    def close(self) -> None:
        return None


def test_a_placer_error_closes_the_try_unknown_and_the_rest_goes_on(tmp_path: Path) -> None:
    """The call may have gone out: unknown, never asked again; the other rows are placed."""
    stack_path, _ = pool_stack(tmp_path, numbers=1)
    write_contacts(tmp_path / "contacts.csv",
                   [(f"+1212555010{i}", "UTC", "true") for i in range(3)])
    path = write_campaign(tmp_path, 'name = "f"\naccount = "acme"\ncaller_ids = "all"\n'
                                    'contacts = "contacts.csv"\ncalling_hours = "00:00-24:00"\n'
                                    'max_tries = 3\n')
    stack = load_stack(stack_path)
    clock = FakeClock()
    placer = FlakyPlacer()
    ledger = Ledger(":memory:", durable=False)
    summary = Dialer(load_campaign(path, stack), memory_gate(stack, clock), ledger, placer,
                     VirtualTimer(clock)).run()
    assert placer.asked == ["f:1:1", "f:2:1", "f:3:1"]
    assert (summary["placed"], summary["unknown"]) == (2, 1)
    (failed,) = [t for t in ledger.tries() if t.row == 2]
    assert failed.state == "unknown" and "carrier API timed out" in (failed.reason or "")
    ledger.close()
