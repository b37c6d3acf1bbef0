"""The client's view of the callgate HTTP API: answers as values, errors, and their parsing.

Every answer is checked field by field; an answer that cannot be read raises
:class:`GateProtocolError` naming the field and the value (the load tester counts those
as silent failures).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar
from urllib.parse import quote

import httpx

from callgate.errors import CallConflictError, CallgateError, UnknownNumberError
from callgate.model import Direction, Layer, Outcome, Reason

if TYPE_CHECKING:
    from callgate.client_pacing import RenewPacing


# errors ------------------------------------------------------------------------------
class GateProtocolError(CallgateError):
    """The gate answered something this client cannot read (not JSON, a missing or
    mistyped field, an unknown outcome). The server is at fault (a bug, or a server and
    client of different versions); the load tester counts these as silent failures."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class GateHTTPError(CallgateError):
    """The gate refused the request with ``status_code`` (422 bad body, 401/403 token...).

    The caller is at fault: ``detail`` says which field was wrong; retrying the same
    request will not help."""

    def __init__(self, status_code: int, detail: str) -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(f"gate answered HTTP {status_code}: {detail}")


class LeaseLostError(GateHTTPError):
    """A renew found no lease for ``call_id``: the gate no longer counts this call.

    ``status`` is ``unknown`` (never admitted, or forgotten), ``expired`` (not renewed
    within its TTL), ``ended`` (released) or ``queued`` (still waiting). Hang up."""

    def __init__(self, call_id: str, status: str, detail: str) -> None:
        self.call_id = call_id
        self.status = status
        super().__init__(404, detail)


class GateUnavailableError(CallgateError):
    """The gate could not be reached, timed out, or answered 5xx (its store is down).

    Nobody is at fault yet: retrying later may help. ``status_code`` is None for a
    network error or a timeout."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


# values ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateLease:
    """What an admitted call holds: provider key aliases and an expiry (gate epoch seconds)."""

    expires_at: float
    ttl_s: float
    keys: Mapping[str, str]
    account: str | None = None
    admitted_at: float | None = None


@dataclass(frozen=True)
class GateQueue:
    """Where a queued call stands: 1-based ``position`` on its number, estimated wait (s)."""

    position: int
    estimated_wait_s: float


@dataclass(frozen=True)
class GateDecision:
    """The gate's answer to one acquire, as sent over HTTP (see DESIGN.md, "Decisions")."""

    call_id: str
    outcome: Outcome
    layer: Layer | None
    scope: str | None
    reason: Reason
    lease: GateLease | None
    queue: GateQueue | None
    retry_after_s: float | None
    message: str | None

    @property
    def admitted(self) -> bool:
        return self.outcome is Outcome.ADMITTED


class CallNotAdmitted(CallgateError):
    """``GateClient.call()`` ended without a lease: the call must not be connected.

    Not a fault: it carries the gate's final ``decision`` so the agent can act on it.
    ``outcome`` is ``rejected``, ``retry_later`` (when ``retry=False``, or when the next
    retry would pass ``max_wait_s``) or ``queued`` (``wait=False``, or ``max_wait_s``
    passed; the queue entry has already been cancelled). Play ``message`` to the caller
    (the gate's overflow message, for instance) and, when ``retry_after_s`` is set,
    schedule a new attempt that many seconds from now. ``layer``, ``scope`` and
    ``reason`` say which limit decided, for logs and metrics.
    """

    def __init__(self, decision: GateDecision) -> None:
        self.decision = decision
        where = f" at {decision.layer} {decision.scope}" if decision.layer else ""
        super().__init__(f"call {decision.call_id!r} not admitted: "
                         f"{decision.outcome} ({decision.reason}){where}")

    @property
    def outcome(self) -> Outcome:
        return self.decision.outcome

    @property
    def layer(self) -> Layer | None:
        return self.decision.layer

    @property
    def scope(self) -> str | None:
        return self.decision.scope

    @property
    def reason(self) -> Reason:
        return self.decision.reason

    @property
    def retry_after_s(self) -> float | None:
        return self.decision.retry_after_s

    @property
    def message(self) -> str | None:
        return self.decision.message

@dataclass(frozen=True)
class Ask:
    """What ``call()`` asks for, the same on every poll and retry (but ``attempt``)."""

    call_id: str
    direction: Direction
    number: str
    remote: str | None
    priority: int
    attempt: int
    providers: tuple[str, ...] | None
    resources: dict[str, int] | None
    ttl_s: float | None


class HeldLease:
    """What both clients keep of a lease they renew in the background.

    Subclasses add ``lost``, an event (asyncio's or threading's) set once the gate no
    longer counts the call.
    """

    lost: _Settable

    def __init__(self, decision: GateDecision) -> None:
        assert decision.lease is not None, "only an admitted decision has a lease"
        self.call_id = decision.call_id
        self.decision = decision
        self.lease: GateLease = decision.lease
        self.renewals = 0
        self.lost_status: str | None = None
        # When (time.monotonic() seconds) the request behind the last successful renewal was
        # sent: the gate surely held the lease until then plus its TTL. None: not renewed yet.
        self.confirmed_at: float | None = None

    @property
    def keys(self) -> Mapping[str, str]:
        """Provider pool -> the key alias the gate chose for this call."""
        return self.lease.keys

    @property
    def expires_at(self) -> float:
        """When the lease expires unless renewed (epoch seconds, the gate's clock)."""
        return self.lease.expires_at

    @property
    def ttl_s(self) -> float:
        return self.lease.ttl_s

    def mark_lost(self, status: str, log: logging.Logger) -> None:
        """A renew answered 404 with ``status``: the gate no longer counts this call."""
        log.warning("call %s: lease lost (%s): the gate no longer counts this call; "
                    "hang up", self.call_id, status)
        self.lost_status = status
        self.lost.set()

    def give_up(self, log: logging.Logger) -> None:
        """Renewals failed for a whole TTL: the gate has expired the lease by now."""
        log.warning("call %s: no renewal for a whole TTL (%.3f s): the lease has expired "
                    "at the gate; hang up", self.call_id, self.ttl_s)
        self.lost_status = "expired"
        self.lost.set()

    def after_renew(self, outcome: GateLease | Exception, sent: float, pacing: RenewPacing,
                    interval_s: float, log: logging.Logger) -> bool:
        """Record one heartbeat's outcome (the new lease or the error it raised), the same
        for both clients; True when the heartbeat must stop because the lease is lost.

        ``sent`` is when the renew request left (``time.monotonic()``).
        """
        if isinstance(outcome, LeaseLostError):
            self.mark_lost(outcome.status, log)
            return True
        if isinstance(outcome, Exception):
            if pacing.failed(interval_s, self.ttl_s):
                self.give_up(log)
                return True
            self.renew_failed(outcome, interval_s, log)
            return False
        self.lease = outcome
        self.renewals += 1
        self.confirmed_at = sent
        pacing.renewed()
        return False

    def renew_failed(self, exc: Exception, retry_in_s: float, log: logging.Logger) -> None:
        if isinstance(exc, GateUnavailableError | GateProtocolError | GateHTTPError):
            log.warning("call %s: renew failed (%s); retrying in %.3f s",
                        self.call_id, exc, retry_in_s)
        else:
            log.error("call %s: renew failed unexpectedly (%s: %s); retrying in %.3f s",
                      self.call_id, type(exc).__name__, exc, retry_in_s, exc_info=exc)


class _Settable(Protocol):
    def set(self) -> None: ...


def client_headers(token: str | None, poll_interval_s: float,
                   connect_retry_s: float) -> dict[str, str]:
    """Both clients' request headers, once their timing arguments are known to be sane."""
    if not poll_interval_s > 0:
        raise ValueError(f"poll_interval_s must be > 0 seconds, got {poll_interval_s}")
    if not connect_retry_s >= 0:
        raise ValueError(f"connect_retry_s must be >= 0 seconds, got {connect_retry_s}")
    return {"Authorization": f"Bearer {token}"} if token else {}


def adopted(call_id: str, lease: GateLease) -> GateDecision:
    """The decision an adopted lease stands for (the webhook's admission is not repeated)."""
    return GateDecision(call_id=call_id, outcome=Outcome.ADMITTED, layer=None, scope=None,
                        reason=Reason.ADMITTED, lease=lease, queue=None, retry_after_s=None,
                        message=None)


# parsing -------------------------------------------------------------------------------
_E = TypeVar("_E", Outcome, Layer, Reason)


def quoted_id(call_id: str) -> str:
    """``call_id`` as one path segment; "." and ".." escaped too, or URLs would drop them."""
    if call_id in (".", ".."):
        return call_id.replace(".", "%2E")
    return quote(call_id, safe="")


def json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def detail_of(response: httpx.Response) -> str:
    payload = json_or_none(response)
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # a 422: [{"field", "value", "message"}, ...]
        return "; ".join(
            f"{item.get('field')} = {item.get('value')!r}: {item.get('message')}"
            if isinstance(item, dict) else str(item)
            for item in detail
        )
    text = response.text.strip()
    return text[:200] if text else f"HTTP {response.status_code} with an empty body"


def ok_json(response: httpx.Response) -> object:
    if response.status_code != 200:
        raise GateHTTPError(response.status_code, detail_of(response))
    try:
        return response.json()
    except ValueError:
        raise GateProtocolError(
            f"answer is not JSON: {response.text[:200]!r}", status_code=200) from None


def as_object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GateProtocolError(f"{where} = {value!r}: expected a JSON object")
    return value


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...],
           *, optional: bool = False) -> Any:
    if name not in data:
        if optional:
            return None
        raise GateProtocolError(f"answer has no {name!r} field (fields: {sorted(data)})")
    value = data[name]
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise GateProtocolError(f"{name} = {value!r}: expected {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _seconds(data: Mapping[str, Any], name: str, *, optional: bool = False) -> float | None:
    value = _field(data, name, (int, float), optional=optional)
    if value is None:
        return None
    if not math.isfinite(value) or value < 0:
        raise GateProtocolError(f"{name} = {value!r}: expected a finite number >= 0")
    return float(value)


def _enum(data: Mapping[str, Any], name: str, enum: type[_E],
          *, optional: bool = False) -> _E | None:
    value = _field(data, name, str, optional=optional)
    if value is None:
        return None
    try:
        return enum(value)
    except ValueError:
        accepted = ", ".join(member.value for member in enum)
        raise GateProtocolError(f"{name} = {value!r}: expected one of {accepted}") from None


def parse_lease(value: object, where: str) -> GateLease | None:
    if value is None:
        return None
    data = as_object(value, where)
    expires_at = _seconds(data, "expires_at")
    ttl_s = _seconds(data, "ttl_s")
    keys = as_object(_field(data, "keys", dict), f"{where}.keys")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
        raise GateProtocolError(f"{where}.keys = {keys!r}: expected provider -> key alias")
    assert expires_at is not None and ttl_s is not None
    if ttl_s <= 0:
        raise GateProtocolError(f"{where}.ttl_s = {ttl_s!r}: expected a number > 0")
    return GateLease(expires_at, ttl_s, MappingProxyType(dict(keys)),
                     _field(data, "account", str, optional=True),
                     _seconds(data, "admitted_at", optional=True))


def parse_queue(value: object) -> GateQueue | None:
    if value is None:
        return None
    data = as_object(value, "queue")
    position = _field(data, "position", int)
    wait_s = _seconds(data, "estimated_wait_s")
    assert wait_s is not None
    if position < 1:
        raise GateProtocolError(f"queue.position = {position!r}: expected an integer >= 1")
    return GateQueue(position, wait_s)


_NEEDS: dict[Outcome, Literal["lease", "queue", None]] = {
    Outcome.ADMITTED: "lease", Outcome.QUEUED: "queue",
    Outcome.RETRY_LATER: None, Outcome.REJECTED: None,
}


def parse_decision(value: object) -> GateDecision:
    """A :class:`GateDecision` from the JSON of ``POST /v1/calls``, or GateProtocolError."""
    try:
        data = as_object(value, "answer")
        outcome = _enum(data, "decision", Outcome)
        reason = _enum(data, "reason", Reason)
        assert outcome is not None and reason is not None
        decision = GateDecision(
            call_id=_field(data, "call_id", str),
            outcome=outcome,
            layer=_enum(data, "layer", Layer, optional=True),
            scope=_field(data, "scope", str, optional=True),
            reason=reason,
            lease=parse_lease(data.get("lease"), "lease"),
            queue=parse_queue(data.get("queue")),
            retry_after_s=_seconds(data, "retry_after_s", optional=True),
            message=_field(data, "message", str, optional=True),
        )
    except GateProtocolError as exc:
        raise GateProtocolError(f"unreadable decision: {exc}", status_code=200) from None
    need = _NEEDS[decision.outcome]
    if need is not None and getattr(decision, need) is None:
        raise GateProtocolError(f"unreadable decision: decision = {outcome.value!r} "
                                f"but {need} = None", status_code=200)
    if decision.outcome is Outcome.RETRY_LATER and decision.retry_after_s is None:
        raise GateProtocolError("unreadable decision: decision = 'retry_later' but "
                                "retry_after_s = None", status_code=200)
    return decision


# requests and their answers -------------------------------------------------------------
def acquire_body(
    call_id: str, direction: str, number: str, *, remote: str | None, priority: int,
    attempt: int, providers: Sequence[str] | None, resources: Mapping[str, int] | None,
    ttl_s: float | None,
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/calls``."""
    body: dict[str, Any] = {"call_id": call_id, "direction": direction, "number": number,
                            "priority": priority, "attempt": attempt}
    if remote is not None:
        body["remote"] = remote
    if providers is not None:
        body["providers"] = list(providers)
    if resources is not None:
        body["resources"] = dict(resources)
    if ttl_s is not None:
        body["ttl_s"] = ttl_s
    return body


def read_decision(response: httpx.Response, call_id: str) -> GateDecision:
    """The decision of ``POST /v1/calls``; raises for 409, 404 and every other error."""
    if response.status_code == 409:
        raise CallConflictError(detail_of(response))
    if response.status_code == 404:
        raise UnknownNumberError(detail_of(response))
    decision = parse_decision(ok_json(response))
    if decision.call_id != call_id:
        raise GateProtocolError(f"asked about call_id {call_id!r}, the gate answered about "
                                f"{decision.call_id!r}", status_code=200)
    return decision


def call_path(call_id: str, suffix: str = "") -> str:
    return f"/v1/calls/{quoted_id(call_id)}{suffix}"


def query(**values: object) -> dict[str, str]:
    """Query parameters, leaving out those that are None."""
    return {name: f"{value}" for name, value in values.items() if value is not None}


def read_renewal(response: httpx.Response, call_id: str) -> GateLease:
    """The lease of ``POST /v1/calls/{id}/renew``; LeaseLostError when there is none."""
    if response.status_code == 404:
        status = "unknown"
        payload = json_or_none(response)
        if isinstance(payload, dict) and isinstance(payload.get("status"), str):
            status = payload["status"]
        raise LeaseLostError(call_id, status, detail_of(response))
    data = as_object(ok_json(response), "answer")
    if data.get("call_id") != call_id:
        raise GateProtocolError(f"renew of {call_id!r}: answer has call_id = "
                                f"{data.get('call_id')!r}", status_code=200)
    lease = parse_lease(data.get("lease"), "lease")
    if lease is None:
        raise GateProtocolError("renew answer: lease = None: expected a lease object",
                                status_code=200)
    return lease


def read_release(response: httpx.Response) -> dict[str, bool]:
    """``{"released", "cancelled"}`` of ``DELETE /v1/calls/{id}``."""
    data = as_object(ok_json(response), "answer")
    result = {}
    for name in ("released", "cancelled"):
        value = data.get(name)
        if not isinstance(value, bool):
            raise GateProtocolError(f"release answer: {name} = {value!r}: expected a bool",
                                    status_code=200)
        result[name] = value
    return result


def read_lease_ttl(response: httpx.Response) -> float:
    """The stack's ``lease_ttl`` from ``GET /v1/settings``."""
    value = as_object(ok_json(response), "answer").get("lease_ttl_s")
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise GateProtocolError(f"settings answer: lease_ttl_s = {value!r}: expected a "
                                "number > 0", status_code=200)
    return float(value)


def unreachable_error(method: str, url: str, exc: httpx.TransportError) -> GateUnavailableError:
    if isinstance(exc, httpx.TimeoutException):
        return GateUnavailableError(f"{method} {url}: the gate did not answer in time "
                                    f"({type(exc).__name__})")
    return GateUnavailableError(f"{method} {url}: cannot reach the gate "
                                f"({type(exc).__name__}: {exc})")


def checked(method: str, url: str, response: httpx.Response) -> httpx.Response:
    """``response``, unless the gate answered 5xx (GateUnavailableError)."""
    if response.status_code >= 500:
        raise GateUnavailableError(f"{method} {url}: gate answered HTTP "
                                   f"{response.status_code}: {detail_of(response)}",
                                   status_code=response.status_code)
    return response


def not_admitted_unreachable(
    call_id: str, message: str, exc: GateUnavailableError
) -> CallNotAdmitted:
    """The refusal ``call()``/``adopt()`` raise when no decision could be had at all."""
    refused = CallNotAdmitted(GateDecision(
        call_id=call_id, outcome=Outcome.REJECTED, layer=None, scope=None,
        reason=Reason.GATE_UNREACHABLE, lease=None, queue=None, retry_after_s=None,
        message=message))
    refused.__cause__ = exc
    return refused


def not_admitted_lost(call_id: str, exc: LeaseLostError) -> CallNotAdmitted:
    """The refusal ``adopt()`` raises when the lease to take over is already gone."""
    refused = CallNotAdmitted(GateDecision(
        call_id=call_id, outcome=Outcome.REJECTED, layer=None, scope=None,
        reason=Reason.CALL_ENDED, lease=None, queue=None, retry_after_s=None,
        message=f"no lease to take over ({exc.status}): {exc.detail}"))
    refused.__cause__ = exc
    return refused
