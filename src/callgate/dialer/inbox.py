"""Calls a provider took, waiting for their results to come back through the gate.

A placer like Twilio's answers at once ("queued"); the callee's answer, the agent's start
and the final status reach the *gate* as webhooks, and the gate appends them to the
campaign's state file (:mod:`callgate.dialer.shared`). The dialler polls that file: when
a call's final status is there, :func:`~callgate.dialer.pacing.judge` turns its facts into
a result. A call whose final status never comes is given up as ``unknown`` (never placed
again) once it cannot still be live: ``ring_timeout`` plus :data:`STATUS_GRACE_S` after
placing when nobody answered, :data:`MAX_CALL_S` after the answer otherwise; the gate's
lease for it expired by then or is released here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callgate.dialer.campaign import CampaignFile
from callgate.dialer.ledger import Ledger
from callgate.dialer.pacing import CallFacts, judge
from callgate.dialer.placers import Placement

STATUS_GRACE_S = 120.0
MAX_CALL_S = 4 * 3600.0
FINAL = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


@dataclass
class Awaited:
    """One call the provider took: which try, from which number, and what is known."""

    call_id: str
    row: int
    try_no: int
    number: str
    facts: CallFacts = field(default_factory=lambda: CallFacts(0.0))


class Inbox:
    """The calls in the provider's hands, and the gate's facts about them."""

    def __init__(self, ledger: Ledger, spec: CampaignFile) -> None:
        self._ledger, self._spec = ledger, spec
        self.calls: dict[str, Awaited] = {}
        self._last = 0

    def add(self, call_id: str, row: int, try_no: int, number: str, placed_at: float) -> None:
        self.calls[call_id] = Awaited(call_id, row, try_no, number, CallFacts(placed_at))

    def collect(self, now: float) -> list[tuple[Awaited, Placement]]:
        """The calls that ended (their facts read from the state file) with their results."""
        for event_id, call_id, kind, at, status, answered_by in \
                self._ledger.call_events(self._last):
            self._last = max(self._last, event_id)
            call = self.calls.get(call_id)
            if call is None:
                continue
            facts = call.facts
            if kind == "answered" and facts.answered_at is None:
                facts.answered_at = at
            elif kind == "agent" and facts.agent_at is None:
                facts.agent_at = at
            elif kind == "status" and status in FINAL and facts.status is None:
                facts.status, facts.status_at = status, at
                facts.answered_by = answered_by or facts.answered_by
        done = []
        for call in list(self.calls.values()):
            facts = call.facts
            if facts.status is not None:
                done.append((call, judge(facts, self._spec)))
            elif now > self.deadline(call):
                done.append((call, Placement(
                    "unknown", "no final status came back from the provider through the "
                               "gate (is the gate serving --campaigns with this state file?)",
                    now - facts.placed_at)))
            else:
                continue
            del self.calls[call.call_id]
        return done

    def deadline(self, call: Awaited) -> float:
        facts = call.facts
        if facts.answered_at is None:
            return facts.placed_at + self._spec.ring_timeout + STATUS_GRACE_S
        return facts.answered_at + MAX_CALL_S
