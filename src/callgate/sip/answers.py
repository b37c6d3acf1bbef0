"""What the SIP edge answers: a refused call's final response, a queued call's 182.

One table maps what refused a call (the decision's reason when it is specific, else its
layer) to a status code, configurable in ``[sip.codes]``. The defaults follow RFC 3261:
``486 Busy Here`` for a full number, account, resource, key pool, window or queue (busy
*here*: the caller may try again later); ``480 Temporarily Unavailable`` while every
provider key cools down; ``503 Service Unavailable`` only for a full trunk or an
unreachable store, because a 503 tells an upstream proxy that this whole server is down
for Retry-After seconds (21.5.4) and it will stop sending it calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from callgate.config import SipCodes
from callgate.model import Decision, Layer, Reason

PHRASES = {
    400: "Bad Request", 403: "Forbidden", 404: "Not Found", 480: "Temporarily Unavailable",
    482: "Loop Detected", 486: "Busy Here", 487: "Request Terminated",
    500: "Server Internal Error", 503: "Service Unavailable", 600: "Busy Everywhere",
    603: "Decline",
}
QUEUED = (182, "Queued")
RETRY_AFTER_FALLBACK_S = 60  # a refusal without a retry time (should not happen) still says one


@dataclass(frozen=True)
class Answer:
    """A SIP response to send: status code, reason phrase, extra headers (name, value)."""

    code: int
    phrase: str
    headers: tuple[tuple[str, str], ...] = ()


def code_for(decision: Decision, codes: SipCodes) -> int:
    """The configured status code for a refusal.

    In order: a store that cannot be reached or every key cooling (whatever the layer);
    a full trunk (the whole server is busy, whichever way the call was refused); a full or
    timed-out queue; else the layer that refused.
    """
    reason = decision.reason
    if reason is Reason.STORE_UNAVAILABLE:
        return codes.store_unavailable
    if reason is Reason.PROVIDER_COOLDOWN:
        return codes.provider_cooldown
    if decision.layer is Layer.TRUNK:
        return codes.trunk
    if reason is Reason.QUEUE_FULL:
        return codes.queue_full
    if reason is Reason.QUEUE_TIMEOUT:
        return codes.queue_timeout
    layer = decision.layer.value if decision.layer is not None else "number"
    return int(getattr(codes, layer, codes.number))


def refusal(decision: Decision, codes: SipCodes) -> Answer:
    """The final answer for a call the gate did not admit (``rejected`` or ``retry_later``)."""
    code = code_for(decision, codes)
    retry = decision.retry_after_s
    seconds = RETRY_AFTER_FALLBACK_S if retry is None or not math.isfinite(retry) else (
        max(1, math.ceil(retry)))
    headers = [("Retry-After", str(seconds)),
               ("X-Callgate-Reason", decision.reason.value)]
    if decision.layer is not None:
        headers.append(("X-Callgate-Layer", decision.layer.value))
    return Answer(code, PHRASES.get(code, "Refused"), tuple(headers))


def queued(decision: Decision, waited_s: float = 0.0) -> Answer:
    """``182 Queued`` with the caller's place in the number's queue and seconds on hold.

    The seconds also make each re-sent 182 a new message rather than a copy of the last
    one, which a UA or SIPp may take for a retransmission and not report.
    """
    position = decision.queue.position if decision.queue is not None else 0
    return Answer(*QUEUED, (("X-Callgate-Queue-Position", str(position)),
                            ("X-Callgate-Queue-Waited", str(max(0, int(waited_s))))))


def agent_failure(agent_code: int) -> Answer:
    """What the trunk hears when the agent fails: its own 4xx as 480, anything else as 500.

    Never the agent's 503: relayed upstream it would make the trunk's proxy mark this
    edge, and so every number behind it, down for Retry-After seconds.
    """
    if 400 <= agent_code < 500 and agent_code not in (401, 407):
        return Answer(480, PHRASES[480], (("X-Callgate-Reason", f"agent_{agent_code}"),))
    return Answer(500, PHRASES[500], (("X-Callgate-Reason", f"agent_{agent_code}"),))
