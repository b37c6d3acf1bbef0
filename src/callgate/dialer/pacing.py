"""Abandonment: what a finished call's facts mean, and when the campaign must stop dialling.

A call is *abandoned* when the callee answered and no agent started talking within
``abandon_after`` (the agent's media stream connecting, or its first lease renew, marks
the start). Regulators count these (the US TSR caps them at 3% of answered calls over 30
days), so the campaign keeps a rolling rate: abandoned / answered over the calls placed
since the later of the campaign's first call, 30 days ago and the operator's last
``--resume``; calls a machine answered count in neither. Once at least
``abandon_min_answered`` calls were answered, a rate at or above ``abandon_limit`` pauses
the campaign: nothing new is placed (calls already ringing finish), and the reason is
kept in the state file for the view, ``--json`` and ``GET /v1/campaigns``. It resumes
when the rate falls back under the limit (old calls leaving the window) or when an
operator runs ``callgate dial --resume`` (the window then starts again at that moment).

This module is the one place these rules live: :func:`judge` turns the gate's facts
into a result, :class:`Pacing` decides pausing.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from callgate.dialer.campaign import CampaignFile
from callgate.dialer.ledger import Ledger
from callgate.dialer.placers import Placement, Result

WINDOW_S = 30 * 86_400.0
PAUSED_KEY, RESUMED_KEY = "paused", "resumed_at"
# Twilio's final CallStatus values and what the dialler makes of each
_UNANSWERED: dict[str, tuple[Result, str]] = {
    "busy": ("busy", "busy"), "no-answer": ("no_answer", "rang out"),
    "failed": ("failed", "failed"), "canceled": ("failed", "canceled")}


@dataclass
class CallFacts:
    """What the gate recorded for one call (times in epoch seconds)."""

    placed_at: float
    answered_at: float | None = None
    agent_at: float | None = None
    status: str | None = None
    answered_by: str | None = None
    status_at: float | None = None


def judge(facts: CallFacts, spec: CampaignFile) -> Placement:
    """The result of a call whose final status arrived (the one rule for it)."""
    status = facts.status or ""
    ended = facts.status_at if facts.status_at is not None else facts.placed_at
    if status in _UNANSWERED:
        result, words = _UNANSWERED[status]
        return Placement(result, f"provider: {words}", ended - facts.placed_at)
    answered = facts.answered_at if facts.answered_at is not None else facts.placed_at
    ring, talk = answered - facts.placed_at, max(0.0, ended - answered)
    if (facts.answered_by or "").startswith(("machine", "fax")):
        policy = "hung up" if spec.voicemail == "hangup" else "left to the agent"
        return Placement("machine", f"provider: answered by {facts.answered_by}; {policy}",
                         ring, talk)
    late = facts.agent_at is None or facts.agent_at - answered > spec.abandon_after
    if facts.answered_at is not None and late:
        waited = "never" if facts.agent_at is None else \
            f"after {facts.agent_at - answered:.1f}s"
        return Placement("abandoned", f"answered; the agent started {waited} "
                                      f"(abandon_after {spec.abandon_after:g}s)", ring, talk)
    return Placement("answered", "provider: completed", ring, talk)


class Pacing:
    """Whether the campaign may place another call now (see the module docstring).

    The window's answered calls are kept in a heap by placing time (read from the ledger
    once, then :meth:`note` for each result), so a check costs nothing per call.
    """

    def __init__(self, ledger: Ledger, spec: CampaignFile) -> None:
        self._ledger, self._spec = ledger, spec
        self._calls: list[tuple[float, bool]] = []  # (placed_at, abandoned), a heap
        self._floor = float("-inf")
        self.answered = self.abandoned = 0
        self.reason: str | None = ledger.get_meta(PAUSED_KEY)

    def start(self, now: float, *, resume: bool) -> None:
        """Read the window from the ledger; ``resume`` is the operator's ``--resume``:
        the pause is cleared and the window starts again now."""
        if resume:
            self._ledger.set_meta(RESUMED_KEY, repr(now))
            self._ledger.set_meta(PAUSED_KEY, None)
            self.reason = None
        resumed = self._ledger.get_meta(RESUMED_KEY)
        self._floor = float(resumed) if resumed else float("-inf")
        self._calls = []
        self.answered = self.abandoned = 0
        for placed_at, abandoned in self._ledger.answered_tries(max(now - WINDOW_S,
                                                                    self._floor)):
            self.note("abandoned" if abandoned else "answered", placed_at)

    def note(self, result: str, placed_at: float) -> None:
        """A call's result is known: count it if a person answered."""
        if result not in ("answered", "abandoned") or placed_at < self._floor:
            return
        abandoned = result == "abandoned"
        heapq.heappush(self._calls, (placed_at, abandoned))
        self.answered += 1
        self.abandoned += abandoned

    @property
    def rate(self) -> float | None:
        return self.abandoned / self.answered if self.answered else None

    def check(self, now: float) -> str | None:
        """Why dialling is paused now, or None (a change is written to the state file)."""
        while self._calls and self._calls[0][0] < now - WINDOW_S:
            _, abandoned = heapq.heappop(self._calls)
            self.answered -= 1
            self.abandoned -= abandoned
        spec, rate, reason = self._spec, self.rate, None
        if self.answered >= spec.abandon_min_answered and rate is not None \
                and rate >= spec.abandon_limit:
            reason = (f"abandonment rate {rate:.1%} >= abandon_limit {spec.abandon_limit:.1%} "
                      f"({self.abandoned} of {self.answered} answered calls); resume with "
                      "callgate dial --resume once the cause is fixed")
        if reason != self.reason:
            self._ledger.set_meta(PAUSED_KEY, reason)
            self.reason = reason
        return reason

    def summary(self) -> dict[str, Any]:
        rate = self.rate
        return {"answered": self.answered, "abandoned": self.abandoned,
                "rate": None if rate is None else round(rate, 4),
                "limit": self._spec.abandon_limit,
                "min_answered": self._spec.abandon_min_answered}
