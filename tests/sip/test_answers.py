"""What the SIP edge answers for each refusal, a queued call and an agent's failure."""

from __future__ import annotations

import pytest

from callgate.config import SipCodes
from callgate.model import Decision, Layer, Outcome, QueueInfo, Reason
from callgate.sip.answers import agent_failure, code_for, queued, refusal


def refused(layer: Layer | None, reason: Reason, retry_after_s: float | None = 30.0) -> Decision:
    return Decision("c1", Outcome.REJECTED, layer, "scope", reason, retry_after_s=retry_after_s)


@pytest.mark.parametrize(("layer", "reason", "code"), [
    (Layer.NUMBER, Reason.CAPACITY, 486),
    (Layer.ACCOUNT, Reason.CAPACITY, 486),
    (Layer.RESOURCE, Reason.CAPACITY, 486),
    (Layer.PROVIDER, Reason.CAPACITY, 486),
    (Layer.WINDOW, Reason.RATE_WINDOW, 486),
    (Layer.QUEUE, Reason.QUEUE_FULL, 486),
    (Layer.NUMBER, Reason.QUEUE_TIMEOUT, 486),
    (Layer.PROVIDER, Reason.PROVIDER_COOLDOWN, 480),
    (Layer.TRUNK, Reason.CAPACITY, 503),
    (Layer.TRUNK, Reason.QUEUE_TIMEOUT, 503),
    (Layer.STORE, Reason.STORE_UNAVAILABLE, 503),
])
def test_default_codes_follow_rfc_3261(layer: Layer, reason: Reason, code: int) -> None:
    """486 for a full number/account/pool/window/queue, 480 cooldown, 503 trunk or store."""
    assert code_for(refused(layer, reason), SipCodes()) == code


def test_codes_are_configurable() -> None:
    """[sip.codes] replaces a default (here: a full trunk answers 486, not 503)."""
    codes = SipCodes(trunk=486, queue_full=600)
    assert code_for(refused(Layer.TRUNK, Reason.CAPACITY), codes) == 486
    assert code_for(refused(Layer.QUEUE, Reason.QUEUE_FULL), codes) == 600


def test_a_refusal_carries_a_whole_second_retry_after_and_what_refused() -> None:
    """Retry-After is numeric (rounded up), with X-Callgate-Layer and X-Callgate-Reason."""
    answer = refusal(refused(Layer.QUEUE, Reason.QUEUE_FULL, 12.2), SipCodes())
    assert (answer.code, answer.phrase) == (486, "Busy Here")
    assert dict(answer.headers) == {"Retry-After": "13", "X-Callgate-Layer": "queue",
                                    "X-Callgate-Reason": "queue_full"}


def test_a_refusal_without_a_retry_time_still_says_one() -> None:
    """A decision with no retry_after_s still gets a numeric Retry-After."""
    answer = refusal(refused(Layer.NUMBER, Reason.CALL_ENDED, None), SipCodes())
    assert dict(answer.headers)["Retry-After"].isdigit()


def test_queued_is_182_with_the_position_and_seconds_on_hold() -> None:
    """A queued call hears 182 Queued with X-Callgate-Queue-Position and -Waited (whole s)."""
    decision = Decision("c1", Outcome.QUEUED, Layer.NUMBER, "+1", Reason.CAPACITY,
                        queue=QueueInfo(3, 40.0))
    answer = queued(decision, 61.7)
    assert (answer.code, answer.phrase, dict(answer.headers)) == (
        182, "Queued", {"X-Callgate-Queue-Position": "3", "X-Callgate-Queue-Waited": "61"})


@pytest.mark.parametrize(("agent", "caller"), [
    (486, 480), (404, 480), (408, 480), (500, 500), (503, 500), (600, 500), (603, 500),
])
def test_an_agent_failure_is_480_or_500_never_its_own_503(agent: int, caller: int) -> None:
    """The agent's 4xx becomes 480, anything else 500: a 503 would mark the edge down."""
    assert agent_failure(agent).code == caller
