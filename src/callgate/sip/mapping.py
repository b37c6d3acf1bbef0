"""An INVITE as the gate sees it: the call id, our number, the remote party, where it goes.

The call id is the INVITE's Call-ID when the HTTP API would accept it as one (at most
:data:`MAX_CALL_ID` characters from :data:`CALL_ID_CHARS`), so logs and ``/v1/calls`` show
the same id the trunk's CDRs do; anything else becomes ``sip-`` and the first 32 hex digits
of its SHA-256 (stable, so a retransmission maps to the same call).
"""

from __future__ import annotations

import hashlib
import string

from callgate.config import Stack
from callgate.model import Call

MAX_CALL_ID = 128
CALL_ID_CHARS = frozenset(string.ascii_letters + string.digits + "-._~@:+=")


def call_id_for(sip_call_id: str) -> str:
    """The gate's call id for a SIP Call-ID (itself, or ``sip-`` + a SHA-256 prefix)."""
    if 0 < len(sip_call_id) <= MAX_CALL_ID and set(sip_call_id) <= CALL_ID_CHARS:
        return sip_call_id
    return "sip-" + hashlib.sha256(sip_call_id.encode("utf-8")).hexdigest()[:32]


def number_of(user: str | None) -> str | None:
    """A URI user part as an E.164 number (``tel``-style visual separators dropped)."""
    if not user:
        return None
    digits = "".join(c for c in user.split(";", 1)[0] if c not in "-.() ")
    return digits if digits.startswith("+") else f"+{digits}" if digits.isdigit() else digits


def call_for(sip_call_id: str, request_user: str | None, to_user: str | None,
             from_user: str | None, stack: Stack) -> Call:
    """The inbound :class:`Call` of an INVITE: number = Request-URI user, else To's.

    A Request-URI user that is not one of the stack's numbers (a trunk that puts a routing
    prefix or the SBC's own user there) falls back to the To user when that one is.
    """
    number = number_of(request_user)
    to_number = number_of(to_user)
    if (number is None or number not in stack.numbers) and to_number is not None:
        number = to_number if to_number in stack.numbers or number is None else number
    return Call(call_id_for(sip_call_id), "inbound", number or "", remote=from_user or None)


def forward_uri(stack: Stack, number: str, default: str | None) -> str | None:
    """Where an admitted call on ``number`` goes: the number's, the account's, else ``default``."""
    spec = stack.numbers.get(number)
    if spec is None:
        return default
    return spec.sip_forward or stack.accounts[spec.account].sip_forward or default
