"""Two call legs per admitted call, on sippy's RFC 3261 stack (a B2BUA).

sippy parses, retransmits and matches transactions; its ``UA`` runs each leg's dialog state
machine. This module only wires the legs to the gate:

    caller leg (UAS)         edge                          agent leg (UAC)
    INVITE ───────────▶ 100 Trying, gate.acquire
                        admitted ─ INVITE + X-Callgate-* ─────────▶
    ◀──── 180/183/200 ───────── relayed ─────────────────── 180/183/200
    BYE / CANCEL ─────────── relayed, lease released once ───────▶
                        queued ─ 182 Queued, re-polled until promoted or refused
                        refused ─ 486/480/503 + Retry-After, X-Callgate-Layer/Reason

Everything runs on sippy's one event-loop thread (``ED2``): its UDP threads hand every
datagram to that loop, so a dialog's callbacks never race each other. The gate's calls are
synchronous and short (a SQLite transaction or one Redis round trip).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sippy.CCEvents import (  # type: ignore[import-untyped]
    CCEventConnect,
    CCEventDisconnect,
    CCEventFail,
    CCEventRing,
    CCEventTry,
)
from sippy.SipCallId import SipCallId  # type: ignore[import-untyped]
from sippy.SipURL import SipURL  # type: ignore[import-untyped]
from sippy.Time.Timeout import Timeout  # type: ignore[import-untyped]

from callgate.config import SipCodes
from callgate.errors import CallgateError, UnknownNumberError
from callgate.gate import Gate
from callgate.model import Outcome
from callgate.service.metrics import Metrics
from callgate.sip import answers, session_timer
from callgate.sip.answers import Answer
from callgate.sip.lease import DialogLease
from callgate.sip.leg import Leg, header, header_value, session_expires_of
from callgate.sip.mapping import call_for, forward_uri
from callgate.sip.session_timer import LegTimer, SessionTimerError, TooSmall

log = logging.getLogger("callgate.sip")

POLL_INTERVAL_S = 1.0  # how often a queued call asks again (slots free between polls)
QUEUED_RESEND_S = 60.0  # RFC 3261 13.3.1.1: a provisional at least every minute
REAP_INTERVAL_S = 1.0  # expire due leases and stale queue entries (as serve's reaper does)


@dataclass(frozen=True)
class EdgeSettings:
    """What one ``callgate sip`` process needs beyond the stack (flags over ``[sip]``).

    ``time_scale`` multiplies the edge's own protocol timers (session refresh and expiry,
    the queued call's 182 re-send), never the numbers in its headers nor the gate's
    leases: 1 in production; the SIPp tests run them faster (``--time-scale``, hidden).
    """

    forward: str | None
    forward_timeout_s: float
    codes: SipCodes
    session_expires_s: int = 1800
    time_scale: float = 1.0


def _fail(answer: Answer) -> Any:
    event = CCEventFail((answer.code, answer.phrase))
    event.extra_headers = tuple(header(n, v) for n, v in answer.headers)
    return event


def _ring(answer: Answer) -> Any:
    event = CCEventRing((answer.code, answer.phrase, None))
    event.extra_headers = tuple(header(n, v) for n, v in answer.headers)
    return event


class Dialog:
    """One inbound call: the caller's leg, the agent's leg once admitted, and its lease."""

    def __init__(self, edge: Edge, lease: DialogLease, sip_call_id: str,
                 caller_timer: LegTimer) -> None:
        self.edge = edge
        self.lease = lease
        self.sip_call_id = sip_call_id
        self.caller = Leg(edge.global_config, time_scale=edge.settings.time_scale,
                          on_expired=self._expired, event_cb=self._from_caller,
                          dead_cbs=(self._dead,))
        self.caller.timer = caller_timer  # its headers go on our 2xx to the INVITE
        self.agent: Leg | None = None
        self.try_event: Any = None
        self.connected = False
        self.timers: list[Any] = []  # the heartbeat and max_call_duration, once forwarded
        self.poll_timer: Any = None  # the next poll of a queued call
        self.resend_timer: Any = None  # the next re-send of a queued call's 182
        self.last_position: int | None = None
        self.queued_since: float | None = None
        self.offered_s = 0  # the Session-Expires offered to the agent
        self.retried_422 = False

    # the caller's leg ------------------------------------------------------------------
    def _from_caller(self, event: Any, ua: Any) -> None:
        self.edge.guard(self._on_caller, event)

    def _on_caller(self, event: Any) -> None:
        if isinstance(event, CCEventTry):
            if self.try_event is None:
                self.try_event = event
                self._decide()
            return
        if isinstance(event, CCEventDisconnect | CCEventFail):
            why = "caller_bye" if self.connected else "caller_cancel"
            if self.agent is not None:
                self.agent.recvEvent(CCEventDisconnect(origin="caller"))
            self._end(why)
            return
        if self.agent is not None:  # re-INVITEs, INFO, UPDATE: the agent's business
            self.agent.recvEvent(event)

    def _decide(self) -> None:
        try:
            decision = self.lease.decide()
        except CallgateError as exc:  # e.g. the number left the stack in a reload
            log.warning("sip %s: %s; answering 500", self.sip_call_id, exc)
            self.caller.recvEvent(_fail(Answer(500, answers.PHRASES[500])))
            self._end("error")
            return
        if decision.outcome is Outcome.ADMITTED:
            self._forward()
        elif decision.outcome is Outcome.QUEUED:
            self._hold()
        else:
            self.caller.recvEvent(_fail(answers.refusal(decision, self.edge.settings.codes)))
            self._end("refused")

    def _hold(self) -> None:
        """Ringback with ``182 Queued`` (on change and every minute); poll until decided."""
        decision = self.lease.decision
        assert decision is not None
        position = decision.queue.position if decision.queue is not None else 0
        if position != self.last_position:
            self._send_182()
        self.poll_timer = Timeout(self._poll, POLL_INTERVAL_S)

    def _send_182(self) -> None:
        """``182 Queued`` with the current position; the next one within a minute.

        RFC 3261 13.3.1.1: a UAS that holds an INVITE without a final answer sends a
        provisional at least every minute, or proxies on the way give up on it.
        """
        decision = self.lease.decision
        assert decision is not None
        now = self.edge.gate.clock()
        if self.queued_since is None:
            self.queued_since = now
        self.caller.recvEvent(_ring(answers.queued(decision, now - self.queued_since)))
        self.last_position = decision.queue.position if decision.queue is not None else 0
        if self.resend_timer is not None:
            self.resend_timer.cancel()
        self.resend_timer = Timeout(self._resend, QUEUED_RESEND_S * self.edge.settings.time_scale)

    def _resend(self) -> None:
        self.edge.guard(self._resend_if_queued)

    def _resend_if_queued(self) -> None:
        self.resend_timer = None
        decision = self.lease.decision
        if (not self.lease.ended and self.agent is None and decision is not None
                and decision.outcome is Outcome.QUEUED):
            self._send_182()

    def _poll(self) -> None:
        self.edge.guard(self._repoll)

    def _repoll(self) -> None:
        self.poll_timer = None
        if not self.lease.ended:
            self._decide()

    # the agent's leg -------------------------------------------------------------------
    def _forward(self, offered: int | None = None) -> None:
        first = self.agent is None  # else a retry after the agent's 422
        target = self.edge.target_for(self.lease.call.number)
        if target is None:  # checked at start-up; a reload may not remove it under a call
            self.caller.recvEvent(_fail(Answer(500, answers.PHRASES[500])))
            self._end("no_forward_uri")
            return
        decision = self.lease.decision
        assert decision is not None and decision.lease is not None
        url = SipURL(url=target)
        headers = [header("X-Callgate-Call-Id", decision.call_id)]
        headers += [header(f"X-Callgate-Key-{provider}", alias)
                    for provider, alias in decision.lease.keys.items()]
        _, cli, _, body, _, name = self.try_event.getData()
        event = CCEventTry((SipCallId(), cli, url.username or self.lease.call.number, body,
                            None, name), origin="caller")
        # RFC 4028 7.1: offer the caller leg's interval; the agent picks the refresher.
        if offered is None:
            offered = self.caller.timer.interval_s if self.caller.timer else (
                self.edge.settings.session_expires_s)
        self.offered_s = offered
        headers += [header("Session-Expires", str(offered)),
                    header("Min-SE", str(session_timer.MIN_SE_S)), header("Supported", "timer")]
        event.extra_headers = tuple(headers)
        self._stop_resending()
        self.agent = Leg(self.edge.global_config, time_scale=self.edge.settings.time_scale,
                         on_expired=self._expired, event_cb=self._from_agent,
                         nh_address=(url.host, url.port or 5060),
                         expire_time=self.edge.settings.forward_timeout_s)
        self.agent.on_answered = lambda leg, response: self._agent_answered(leg, response,
                                                                            self.offered_s)
        self.agent.recvEvent(event)
        if first:
            self.timers.append(Timeout(self._heartbeat, self.lease.renew_interval_s, -1))

    def _retry_with_min_se(self) -> bool:
        """The agent answered 422: offer its Min-SE on a new INVITE, once (RFC 4028 7.1)."""
        asked = self.agent.min_se_asked if self.agent is not None else None
        if asked is None or self.retried_422 or asked <= self.offered_s:
            return False
        self.retried_422 = True
        log.info("sip %s: the agent needs Session-Expires >= %d s; offering it", self.sip_call_id,
                 asked)
        self._forward(offered=asked)
        return True

    def _agent_answered(self, leg: Leg, response: Any, offered: int) -> None:
        """The agent's 2xx: its leg's timer (no Session-Expires: the edge refreshes)."""
        try:
            leg.timer = session_timer.for_agent(session_expires_of(response), offered)
        except SessionTimerError as exc:
            log.warning("sip %s: agent's Session-Expires ignored (%s); the edge refreshes",
                        self.sip_call_id, exc)
            leg.timer = LegTimer(offered, edge_refreshes=True, peer_supports=False)

    def _from_agent(self, event: Any, ua: Any) -> None:
        if ua is self.agent:  # not a leg left behind by a 422 retry
            self.edge.guard(self._on_agent, event)

    def _on_agent(self, event: Any) -> None:
        if isinstance(event, CCEventFail):
            code = event.getData()[0] if event.getData() else 500
            if int(code) == 422 and self._retry_with_min_se():
                return
            self.caller.recvEvent(_fail(answers.agent_failure(int(code))))
            self._end(f"agent_{code}")
            return
        if isinstance(event, CCEventDisconnect):
            if self.connected:
                self.caller.recvEvent(CCEventDisconnect(origin="callee"))
                self._end("agent_bye")
            else:  # forward_timeout: sippy CANCELs the agent's INVITE for us
                self.caller.recvEvent(_fail(Answer(480, answers.PHRASES[480],
                                                   (("X-Callgate-Reason", "agent_timeout"),))))
                self._end("agent_timeout")
            return
        if isinstance(event, CCEventConnect) and not self.connected:
            self.connected = True
            self.caller.arm()  # the agent's leg armed itself on its 2xx
            self.timers.append(Timeout(self._too_long,
                                       self.edge.gate.stack.gate.max_call_duration))
        self.caller.recvEvent(event)

    # the lease -------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        self.edge.guard(self._renew)

    def _renew(self) -> None:
        if not self.lease.renew():
            self._hang_up("lease_lost")

    def _expired(self, why: str) -> None:
        self.edge.guard(self._hang_up, why)

    def _too_long(self) -> None:
        self.edge.guard(self._hang_up, "max_call_duration")

    def _hang_up(self, why: str) -> None:
        """End the call from the middle: BYE (or CANCEL) to both legs."""
        if self.lease.ended:
            return
        for leg in (self.caller, self.agent):
            if leg is not None and not leg.isDead():
                leg.recvEvent(CCEventDisconnect(origin="callgate"))
        self._end(why)

    def _stop_resending(self) -> None:
        if self.resend_timer is not None:
            self.resend_timer.cancel()
            self.resend_timer = None

    def _end(self, why: str) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        if self.poll_timer is not None:
            self.poll_timer.cancel()
            self.poll_timer = None
        self._stop_resending()
        for leg in (self.caller, self.agent):
            if leg is not None:
                leg.disarm()
        self.lease.release(why)

    def _dead(self, *args: Any) -> None:
        self.edge.guard(self._forget)

    def _forget(self) -> None:
        self._end("dead")  # a leg that died without an event we saw still frees its lease
        self.edge.forget(self)


class Edge:
    """The request router sippy calls for every out-of-dialog request."""

    def __init__(self, gate: Gate, metrics: Metrics | None, settings: EdgeSettings,
                 global_config: dict[str, Any]) -> None:
        self.gate = gate
        self.metrics = metrics
        self.settings = settings
        self.global_config = global_config
        self.dialogs: dict[str, Dialog] = {}

    def target_for(self, number: str) -> str | None:
        return forward_uri(self.gate.stack, number, self.settings.forward)

    def guard(self, callback: Callable[..., object], *args: Any) -> None:
        """Run a callback; a bug in one call is logged in one line, never kills the loop."""
        try:
            callback(*args)
        except Exception as exc:
            log.error("sip: unexpected %s: %s", type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))

    def forget(self, dialog: Dialog) -> None:
        if self.dialogs.get(dialog.sip_call_id) is dialog:
            del self.dialogs[dialog.sip_call_id]

    def reap(self) -> None:
        """Expire due leases and stale queue entries (promoting queue heads)."""
        self.guard(self.gate.expire)

    def recv_request(self, req: Any, sip_t: Any) -> Any:
        """sippy's callback for a request that belongs to no dialog it knows."""
        try:
            return self._route(req, sip_t)
        except Exception as exc:
            log.warning("sip: bad request (%s: %s); answering 400", type(exc).__name__, exc)
            return (req.genResponse(400, "Bad Request"), None, None)

    def _route(self, req: Any, sip_t: Any) -> Any:
        method = req.getMethod()
        if req.getHFBody("to").getTag() is not None:
            # In-dialog but no such dialog: changes nothing (ACKs are dropped by sippy).
            return (req.genResponse(481, "Call/Transaction Does Not Exist"), None, None)
        if method == "OPTIONS":  # the upstream proxy's keep-alive
            return (req.genResponse(200, "OK"), None, None)
        if method != "INVITE":
            return (req.genResponse(405, "Method Not Allowed"), None, None)
        sip_call_id = str(req.getHFBody("call-id"))
        if sip_call_id in self.dialogs:
            # The same call on a new branch (a forked or re-sent INVITE): RFC 3261 8.2.2.2
            # merged request. Never a second slot.
            return (req.genResponse(482, "Loop Detected"), None, None)
        to_user = req.getHFBody("to").getUrl().username
        from_user = req.getHFBody("from").getUrl().username
        call = call_for(sip_call_id, req.getRURI().username, to_user, from_user,
                        self.gate.stack)
        try:
            account = self.gate.account_of(call.number)
        except UnknownNumberError:
            log.info("sip %s: number %r is not in the stack; 404", sip_call_id, call.number)
            return (req.genResponse(404, "Not Found"), None, None)
        try:
            timer = session_timer.for_caller(
                session_expires_of(req), header_value(req, "min-se"),
                header_value(req, "supported", "k", "require"), self.settings.session_expires_s)
        except SessionTimerError as exc:
            log.info("sip %s: %s; 400", sip_call_id, exc)
            return (req.genResponse(400, "Bad Session-Expires"), None, None)
        if isinstance(timer, TooSmall):  # RFC 4028 9: below our Min-SE
            response = req.genResponse(422, "Session Interval Too Small")
            response.appendHeader(header("Min-SE", str(timer.min_se_s)))
            return (response, None, None)
        dialog = Dialog(self, DialogLease(self.gate, self.metrics, call, account), sip_call_id,
                        timer)
        self.dialogs[sip_call_id] = dialog
        return dialog.caller.recvRequest(req, sip_t)
