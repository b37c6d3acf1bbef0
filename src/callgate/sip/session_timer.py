"""RFC 4028 session timers for one call leg: what to negotiate, who refreshes, when it ends.

sippy has no session timers (it can only send bare keep-alive re-INVITEs), so the edge does
the negotiation itself, per leg, with the same rules on both:

- the caller's leg (the edge answers the INVITE, RFC 4028 section 9): a ``Session-Expires``
  below our ``Min-SE`` of 90 s is refused with ``422``; the interval is the caller's, lowered
  to ``[sip] session_expires`` but never below the caller's ``Min-SE``; the refresher is the
  caller's choice when it names one, the caller (``uac``) when it supports timers and does
  not, and the edge (``uas``) when it does not support them;
- the agent's leg (the edge sends the INVITE, section 7): it offers the caller leg's interval
  and lets the agent choose (a ``422`` gets one new INVITE offering the agent's ``Min-SE``,
  7.1); a 2xx without ``Session-Expires`` means the agent has no timers and the edge
  refreshes (7.2).

The side that refreshes does so at half the interval (with a re-INVITE or UPDATE; the edge
sends a re-INVITE, which every UA supports); the other side ends the call when no refresh
came by ``interval - min(32 s, interval / 3)`` (section 10). Which ``refresher`` value a
header carries depends on who sends it (``uac`` is the sender of the request the header
is in), so :meth:`LegTimer.header` is asked for a request or a response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MIN_SE_S = 90  # RFC 4028 4: the smallest Session-Expires (and Min-SE) anyone may ask for
Refresher = Literal["uac", "uas"]


class SessionTimerError(ValueError):
    """A Session-Expires or Min-SE header that is not ``delta-seconds[;params]``."""


@dataclass(frozen=True)
class SessionExpires:
    """A parsed ``Session-Expires`` (or ``Min-SE``): seconds and the refresher, if named."""

    seconds: int
    refresher: Refresher | None = None


def parse(value: str | None) -> SessionExpires | None:
    """``Session-Expires: 1800;refresher=uac`` (or ``Min-SE: 90``) as seconds and refresher."""
    if value is None:
        return None
    head, *params = (part.strip() for part in value.split(";"))
    if not head.isdigit():
        raise SessionTimerError(f"{value!r}: expected delta-seconds, e.g. 1800;refresher=uac")
    refresher: Refresher | None = None
    for param in params:
        name, _, param_value = param.partition("=")
        if name.strip().lower() == "refresher":
            who = param_value.strip().lower()
            if who not in ("uac", "uas"):
                raise SessionTimerError(f"{value!r}: refresher must be uac or uas")
            refresher = "uac" if who == "uac" else "uas"
    return SessionExpires(int(head), refresher)


def supports_timer(supported: str | None) -> bool:
    """Does a ``Supported`` (or ``Require``) header list the ``timer`` option tag?"""
    return supported is not None and any(
        tag.strip().lower() == "timer" for tag in supported.split(","))


@dataclass
class LegTimer:
    """One leg's session timer: the interval and whether the edge or the peer refreshes."""

    interval_s: int
    edge_refreshes: bool
    peer_supports: bool = True

    @property
    def refresh_in_s(self) -> float:
        """When the refresher sends its refresh: half the interval (RFC 4028 7.4 / 9)."""
        return self.interval_s / 2

    @property
    def expire_in_s(self) -> float:
        """When the side not refreshing gives up: interval - min(32, interval / 3) (10)."""
        return self.interval_s - min(32.0, self.interval_s / 3)

    def header(self, *, in_request: bool) -> str:
        """The ``Session-Expires`` value for a request the edge sends, or its 2xx answer."""
        edge_role: Refresher = "uac" if in_request else "uas"
        peer_role: Refresher = "uas" if in_request else "uac"
        return f"{self.interval_s};refresher={edge_role if self.edge_refreshes else peer_role}"

    def headers(self, *, in_request: bool) -> tuple[tuple[str, str], ...]:
        """Every session-timer header of a request the edge sends, or of its 2xx answer."""
        out = [("Session-Expires", self.header(in_request=in_request))]
        if in_request:
            out.append(("Min-SE", str(MIN_SE_S)))
        elif self.peer_supports:  # 9: Require when the peer must process the answer
            out.append(("Require", "timer"))
        out.append(("Supported", "timer"))
        return tuple(out)

    def refreshed_by_peer(self, requested: SessionExpires | None) -> None:
        """A refresh request from the peer: it may change the interval and the refresher.

        A ``refresher`` in a request names the sender when ``uac``: the peer then refreshes;
        ``uas`` hands the refreshing to the edge.
        """
        if requested is None:
            return
        self.interval_s = max(MIN_SE_S, requested.seconds)
        if requested.refresher is not None:
            self.edge_refreshes = requested.refresher == "uas"


@dataclass(frozen=True)
class TooSmall:
    """The INVITE asked for less than our Min-SE: answer ``422`` with ``Min-SE``."""

    min_se_s: int = MIN_SE_S


def for_caller(session_expires: str | None, min_se: str | None, supported: str | None,
               configured_s: int) -> LegTimer | TooSmall:
    """The caller's leg, from its INVITE (the edge is the UAS; RFC 4028 section 9)."""
    asked = parse(session_expires)
    floor = parse(min_se)
    if asked is not None and asked.seconds < MIN_SE_S:
        return TooSmall()
    interval = min(asked.seconds if asked is not None else configured_s, configured_s)
    interval = max(interval, floor.seconds if floor is not None else 0, MIN_SE_S)
    supports = supports_timer(supported)
    if not supports:
        who: Refresher = "uas"  # a UA without timers cannot refresh: the edge does
    elif asked is not None and asked.refresher is not None:
        who = asked.refresher
    else:
        who = "uac"  # it supports timers and let us choose: the caller refreshes
    return LegTimer(interval, edge_refreshes=who == "uas", peer_supports=supports)


def for_agent(answered: str | None, offered_s: int) -> LegTimer:
    """The agent's leg, from its 2xx to the edge's INVITE (the edge is the UAC; 7.2).

    No ``Session-Expires`` in the answer: the agent has no timers, the edge refreshes with
    the interval it offered. Otherwise the answer's interval, and ``refresher=uac`` (or no
    refresher, which the RFC does not allow in a 2xx) means the edge.
    """
    got = parse(answered)
    if got is None:
        return LegTimer(offered_s, edge_refreshes=True, peer_supports=False)
    return LegTimer(max(MIN_SE_S, got.seconds), edge_refreshes=got.refresher != "uas")
