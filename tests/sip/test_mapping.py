"""An INVITE's Call-ID, Request-URI, To and From as the gate's call, and where it goes."""

from __future__ import annotations

import pytest
from tests.conftest import stack_from

from callgate.sip.mapping import MAX_CALL_ID, call_for, call_id_for, forward_uri, number_of

STACK = """
[trunks.main]
max_concurrent = 5
[plans.basic]
max_concurrent = 5
[accounts.acme]
plan = "basic"
sip_forward = "sip:acme@10.0.0.5:5060"
[accounts.other]
plan = "basic"
[numbers."+14155550100"]
account = "acme"
trunk = "main"
max_concurrent = 2
sip_forward = "sip:front-desk@10.0.0.6"
[numbers."+14155550101"]
account = "acme"
trunk = "main"
max_concurrent = 2
[numbers."+14155550102"]
account = "other"
trunk = "main"
max_concurrent = 2
"""


def test_a_call_id_the_api_accepts_is_kept() -> None:
    """A plain Call-ID is the gate's call id, so logs match the trunk's CDRs."""
    assert call_id_for("a84b4c76e66710@pc33.example.com") == "a84b4c76e66710@pc33.example.com"


@pytest.mark.parametrize("raw", ["x" * (MAX_CALL_ID + 1), "has space@host", "semi;colon", ""])
def test_other_call_ids_become_a_stable_sha256_prefix(raw: str) -> None:
    """Too long or odd characters: sip- + 32 hex digits, the same for a retransmission."""
    mapped = call_id_for(raw)
    assert mapped.startswith("sip-") and len(mapped) == 36
    assert all(c in "0123456789abcdef" for c in mapped[4:])
    assert call_id_for(raw) == mapped


@pytest.mark.parametrize(("user", "number"), [
    ("+14155550100", "+14155550100"), ("14155550100", "+14155550100"),
    ("+1-415-555-0100", "+14155550100"), ("+14155550100;npdi", "+14155550100"),
    ("agent", "agent"), (None, None), ("", None),
])
def test_uri_users_read_as_e164(user: str | None, number: str | None) -> None:
    """Trunks send numbers with or without '+', with visual separators or parameters."""
    assert number_of(user) == number


def test_request_uri_user_is_the_number_and_from_user_the_remote() -> None:
    """number = Request-URI user, remote = From user, direction inbound."""
    call = call_for("c1@h", "+14155550101", "+14155550100", "+15551230000", stack_from(STACK))
    assert (call.call_id, call.direction, call.number, call.remote) == (
        "c1@h", "inbound", "+14155550101", "+15551230000")


def test_to_user_is_used_when_the_request_uri_user_is_not_a_number_of_the_stack() -> None:
    """An SBC that rewrites the Request-URI user (or omits it) still reaches the number."""
    stack = stack_from(STACK)
    assert call_for("c1@h", "gateway", "+14155550100", None, stack).number == "+14155550100"
    assert call_for("c1@h", None, "14155550100", None, stack).number == "+14155550100"
    assert call_for("c1@h", None, None, None, stack).number == ""


def test_forward_uri_prefers_the_number_then_the_account_then_the_default() -> None:
    """sip_forward on the number beats the account's, which beats --forward / [sip] forward."""
    stack = stack_from(STACK)
    default = "sip:agents@10.0.0.9"
    assert forward_uri(stack, "+14155550100", default) == "sip:front-desk@10.0.0.6"
    assert forward_uri(stack, "+14155550101", default) == "sip:acme@10.0.0.5:5060"
    assert forward_uri(stack, "+14155550102", default) == default
    assert forward_uri(stack, "+19999999999", None) is None
