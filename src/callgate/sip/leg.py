"""One call leg on sippy's ``UA``, with its RFC 4028 session timer run by the edge.

sippy's ``UA`` runs the leg's dialog but knows nothing of session timers: it answers a
re-INVITE with the same SDP itself (the edge never hears of it), does not answer UPDATE at
all, and writes only the headers it is given. :class:`Leg` adds what the timer needs:

- every INVITE or UPDATE the edge sends on an established leg, and every 2xx it answers to
  an INVITE, carries ``Session-Expires`` (+ ``Min-SE``/``Require``/``Supported``);
- a re-INVITE or UPDATE from the peer is a refresh: it is reported (and UPDATE answered
  ``200`` here, with the timer's headers);
- a 2xx to an INVITE the edge sent (the agent's answer, a relayed re-INVITE's) is reported,
  so the dialog learns the agent's refresher;
- :meth:`Leg.arm` schedules the leg's next step: the edge's own refresh (a re-INVITE with
  the leg's SDP unchanged) at half the interval when the edge refreshes, else the end of
  the session when the peer's refresh is missed. A refresh answered ``408``/``481`` or
  another failure also ends it (RFC 4028 10); ``491`` (glare) is tried again shortly.

The timers run ``time_scale`` times faster than the interval says: 1 in production; tests
run a 90 s session (the RFC's minimum, which the headers still say) in a few seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sippy.SipGenericHF import SipGenericHF  # type: ignore[import-untyped]
from sippy.SipHeader import SipHeader  # type: ignore[import-untyped]
from sippy.Time.Timeout import Timeout  # type: ignore[import-untyped]
from sippy.UA import UA  # type: ignore[import-untyped]

from callgate.sip import session_timer
from callgate.sip.session_timer import LegTimer, SessionTimerError

log = logging.getLogger("callgate.sip")

GLARE_RETRY_S = 2.0  # a refresh that crossed the peer's re-INVITE (491) is tried again


class NamedHF(SipGenericHF):  # type: ignore[misc]
    """A header written with our capitalisation (sippy's generic one would send ``X-callgate-…``).

    Header names are case-insensitive (RFC 3261 7.3.1), but many tools and log searches
    match them literally, so they go out as documented.
    """

    def __init__(self, body: str, name: str) -> None:
        super().__init__(body, name)
        self.written_name = name

    def getCopy(self) -> NamedHF:
        return NamedHF(self.body, self.written_name)

    def getCanName(self, name: str, compact: bool = False) -> str:
        return self.written_name


def header(name: str, value: str) -> Any:
    """A sippy header ``name: value``, written with ``name``'s capitalisation."""
    return SipHeader(name=name, body=NamedHF(value, name))


def header_value(msg: Any, *names: str) -> str | None:
    """Every value of a header (by its long and compact names) joined with commas, or None."""
    values = [str(h.getBody()) for h in msg.headers if h.name in names]
    return ", ".join(values) if values else None


def session_expires_of(msg: Any) -> str | None:
    """The first ``Session-Expires`` (compact ``x``) of a message."""
    values = [str(h.getBody()) for h in msg.headers if h.name in ("session-expires", "x")]
    return values[0] if values else None


class Leg(UA):  # type: ignore[misc]
    """A sippy UA whose session timer the edge runs (see the module's docstring)."""

    def __init__(self, global_config: dict[str, Any], *, time_scale: float,
                 on_expired: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(global_config, **kwargs)
        self.timer: LegTimer | None = None  # set once the leg's session is negotiated
        self.time_scale = time_scale
        self.on_expired = on_expired  # ends the call: BYE both legs, release the lease
        self.on_answered: Callable[[Leg, Any], None] | None = None
        self.next_step: Any = None  # the pending refresh or expiry Timeout
        self.min_se_asked: int | None = None  # the Min-SE of a 422 to our INVITE

    # the timer ----------------------------------------------------------------------
    def arm(self) -> None:
        """Schedule the next refresh (the edge refreshes) or the expiry (the peer does)."""
        self.disarm()
        if self.timer is None or self.isDead():
            return
        if self.timer.edge_refreshes:
            self.next_step = Timeout(self._refresh, self.timer.refresh_in_s * self.time_scale)
        else:
            self.next_step = Timeout(self._expire, self.timer.expire_in_s * self.time_scale)

    def disarm(self) -> None:
        if self.next_step is not None:
            self.next_step.cancel()
            self.next_step = None

    def _expire(self) -> None:
        self.next_step = None
        if not self.isDead():
            log.info("sip %s: no session refresh within %ds; ending the call",
                     self.getCID()[0], self.timer.interval_s if self.timer else 0)
            self.on_expired("session_expired")

    def _refresh(self) -> None:
        self.next_step = None
        if self.isDead():
            return
        if self.state is None or self.state.sname != "Connected":
            # An offer/answer of the peer's is under way (which refreshes as well when it
            # completes); try again once it is over.
            self.next_step = Timeout(self._refresh, GLARE_RETRY_S * self.time_scale)
            return
        request = self.genRequest("INVITE", self.lSDP)
        self.newTransaction(request, resp_cb=self._refresh_answered)

    def _refresh_answered(self, response: Any) -> None:
        code = response.getSCode()[0]
        if code < 200 or self.isDead():
            return
        if code < 300:
            self._learn(response)
            self.arm()
        elif code == 491:
            self.next_step = Timeout(self._refresh, GLARE_RETRY_S * self.time_scale)
        else:
            log.info("sip %s: session refresh answered %d; ending the call",
                     self.getCID()[0], code)
            self.on_expired("session_refresh_failed")

    def _learn(self, response: Any) -> None:
        """A 2xx to an INVITE the edge sent: the interval and refresher it names, if any."""
        if self.timer is None:
            return
        try:
            got = session_timer.parse(session_expires_of(response))
        except SessionTimerError as exc:
            log.warning("sip %s: ignoring a bad Session-Expires (%s)", self.getCID()[0], exc)
            return
        if got is not None:  # refresher=uac in an answer to us: the edge refreshes
            self.timer.interval_s = max(session_timer.MIN_SE_S, got.seconds)
            self.timer.edge_refreshes = got.refresher != "uas"

    # sippy's UA, with the timer's headers and refreshes ----------------------------
    def genRequest(self, method: str, body: Any = None, cqop: Any = None,
                   extra_headers: Any = None, max_forwards: Any = None) -> Any:
        request = super().genRequest(method, body, cqop, extra_headers, max_forwards)
        if self.timer is not None and method in ("INVITE", "UPDATE"):
            request.appendHeaders([header(n, v)
                                   for n, v in self.timer.headers(in_request=True)])
        return request

    def sendUasResponse(self, scode: int, reason: str, body: Any = None, contacts: Any = None,
                        extra_headers: Any = None, ack_wait: bool = False) -> None:
        if self.timer is not None and 200 <= scode < 300:
            extra_headers = (*(extra_headers or ()),
                             *(header(n, v) for n, v in self.timer.headers(in_request=False)))
        super().sendUasResponse(scode, reason, body, contacts, extra_headers, ack_wait)

    def recvRequest(self, req: Any, sip_t: Any) -> Any:
        method = req.getMethod()
        if self.timer is None or method not in ("INVITE", "UPDATE") or not self.isConnected():
            return super().recvRequest(req, sip_t)
        try:
            asked = session_timer.parse(session_expires_of(req))
        except SessionTimerError as exc:
            return (req.genResponse(400, f"Bad Session-Expires: {exc}"), None, None)
        if asked is not None and asked.seconds < session_timer.MIN_SE_S:
            response = req.genResponse(422, "Session Interval Too Small")
            response.appendHeader(header("Min-SE", str(session_timer.MIN_SE_S)))
            return (response, None, None)
        if method == "UPDATE":
            return self._answer_update(req, asked)
        # A re-INVITE: the interval it asks for first, so that sippy's 2xx (sent at once for
        # an unchanged SDP, else once the other leg answers) carries it.
        self.timer.refreshed_by_peer(asked)
        self.arm()
        return super().recvRequest(req, sip_t)

    def _answer_update(self, req: Any, asked: session_timer.SessionExpires | None) -> Any:
        """An UPDATE (RFC 3311) refreshes the session; sippy has no handler, so answer here."""
        cseq = req.getHFBody("cseq").getCSeqNum()
        last: int | None = getattr(self, "rCSeq", None)  # sippy's, untyped
        if last is not None and last >= cseq:
            return (req.genResponse(500, "Server Internal Error"), None, None)
        setattr(self, "rCSeq", cseq)  # noqa: B010 (sippy's attribute, unknown to mypy)
        assert self.timer is not None
        self.timer.refreshed_by_peer(asked)
        self.arm()
        response = req.genResponse(200, "OK", server=self.local_ua)
        response.appendHeader(SipHeader(name="contact", body=self.lContact))
        response.appendHeaders([header(n, v) for n, v in self.timer.headers(in_request=False)])
        return (response, None, None)

    def recvResponse(self, resp: Any, tr: Any) -> None:
        code = resp.getSCode()[0]
        if code == 422 and resp.getHFBody("cseq").getCSeqMethod() == "INVITE":
            try:  # RFC 4028 7.1: the interval the peer needs at least, for a retry
                floor = session_timer.parse(header_value(resp, "min-se"))
            except SessionTimerError:
                floor = None
            self.min_se_asked = floor.seconds if floor is not None else None
        if 200 <= code < 300 and resp.getHFBody("cseq").getCSeqMethod() == "INVITE":
            if self.timer is None and self.on_answered is not None:
                self.on_answered(self, resp)  # the agent's answer: its leg's timer
            else:
                self._learn(resp)  # a relayed re-INVITE's answer refreshes the leg
            self.arm()
        super().recvResponse(resp, tr)
