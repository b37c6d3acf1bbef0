"""Twilio-style voice webhooks (Twilio, SignalWire, Telnyx TeXML): TwiML in, gate decisions out.

The picture is a switchboard operator who answers every ring before anyone speaks::

    ring ──> POST /twilio/voice ──> gate.acquire(CallSid, To)
               admitted  -> <Connect><Stream url=agent>  (call id, keys, renew/release URLs)
               queued    -> hold: <Say> (what is new) + <Play> clip | <Pause> + <Redirect> back
               rejected  -> <Say> overflow + <Hangup/>, or <Reject reason="busy|rejected"/>
    hang-up ─> POST /twilio/status (CallStatus completed/busy/failed/no-answer/canceled)
                                   ──> gate.release: frees the lease or leaves the queue
    agent on ─> POST /twilio/stream (a campaign call's stream started: its agent's start)

A held caller loops through hold cycles, each one poll of the gate::

    1st poll: <Say>Please hold. You are number 3 in line.</Say>         <Redirect ?held=1&pos=3>
    2nd poll:                                                   <Play/> <Redirect ?held=1&pos=3>
    3rd poll: <Say>You are number 2 in line.</Say>              <Play/> <Redirect ?held=1&pos=2>
    4th poll: promoted -> <Connect><Stream>

The clip (``hold_music_loop`` long) or ``hold_pause`` bounds how long a promoted caller
waits to be connected. Words, voice, language and music are the number's, else its
account's, else the stack's (:mod:`callgate.prompts`).

Outbound calls are acquired through ``POST /v1/calls`` *before* dialling, with a call id of
the dialler's choosing; the dialler passes that id in both provider URLs
(``/twilio/outbound?call_id=ID`` to answer, ``/twilio/status?call_id=ID`` for status), so
nothing needs to remember which provider ``CallSid`` belongs to which lease. When the
callee answers, ``/twilio/outbound`` stretches the lease to ``webhook_lease_ttl`` and
connects the agent; the status callback releases it.

Every request must carry a valid ``X-Twilio-Signature``, computed with the auth token of
the account owning the number (``accounts.NAME.auth_token_env``, else ``[twilio]
auth_token_env``: names of environment variables) over the URL the provider requested:
``public_url`` + path when set, else this request's URL, with ``X-Forwarded-Proto`` and
``X-Forwarded-Host`` honoured only from a client in ``trusted_proxies``. A bad or missing
signature is a 403 and changes nothing in the gate.

This edge holds no policy: what a caller hears follows from the decision alone.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from fastapi import APIRouter, Request, Response
from starlette.datastructures import ImmutableMultiDict

from callgate.config import Stack, TwilioSettings
from callgate.dialer.shared import campaign_of
from callgate.errors import CallConflictError, ConfigIssue
from callgate.gate import Gate
from callgate.model import Call, Decision, Outcome, Reason, ReleaseResult, RenewResult, RenewStatus
from callgate.prompts import Prompts, prompts_for
from callgate.service.campaigns import Campaigns

try:
    # The twilio package ships no type information (no py.typed); its TwiML builders and
    # the request validator are used through the small typed helpers below.
    from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]
    from twilio.twiml.voice_response import VoiceResponse  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the Twilio webhooks need the twilio package: pip install 'callgate[twilio]'"
    ) from exc

log = logging.getLogger("callgate.twilio")

Decide = Callable[[Call, float | None, str], Awaitable[Decision]]
Release = Callable[[str, str | None], Awaitable[ReleaseResult]]
Renew = Callable[[str, str | None, float | None], Awaitable[RenewResult]]

SIGNATURE_HEADER = "X-Twilio-Signature"
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
XML = "application/xml"

UNKNOWN_NUMBER_MESSAGE = "We are sorry: this number is not in service. Goodbye."
NOT_SET_UP_MESSAGE = "We are sorry: this line cannot take calls right now. Goodbye."
LEASE_LOST_MESSAGE = "We are sorry: this call cannot continue. Goodbye."


def check_stack(stack: Stack, *, insecure: bool = False) -> list[ConfigIssue]:
    """What would make the webhooks fail at call time, found at start (and on reload)."""
    settings = stack.twilio
    issues: list[ConfigIssue] = []
    for number in stack.numbers:
        if stream_url_for(stack, number) is None:
            issues.append(ConfigIssue(
                f'numbers."{number}".stream_url', None,
                "no agent media stream for this number's calls: set [twilio] stream_url, "
                f"accounts.{stack.numbers[number].account}.stream_url or this (a wss:// URL)"))
    if settings.public_url is not None:
        parts = urlsplit(settings.public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            issues.append(ConfigIssue("twilio.public_url", settings.public_url,
                                      "expected the absolute URL at which the provider reaches "
                                      "this server, e.g. \"https://gate.example.com\""))
    for index, entry in enumerate(settings.trusted_proxies):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            issues.append(ConfigIssue(f"twilio.trusted_proxies[{index}]", entry,
                                      "expected an IP address or a CIDR, e.g. \"10.0.0.0/8\""))
    if settings.hold_pause >= stack.gate.poll_timeout:
        issues.append(ConfigIssue(
            "twilio.hold_pause", settings.hold_pause,
            f"must be below gate.poll_timeout ({stack.gate.poll_timeout:g} s), or a caller on "
            "hold is dropped from the queue between two polls"))
    if settings.validate_signatures and not insecure:
        issues += _token_issues(stack)
    return issues


def _token_issues(stack: Stack) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    accounts = sorted({spec.account for spec in stack.numbers.values()})
    for name in accounts:
        own = stack.accounts[name].auth_token_env
        env = own or stack.twilio.auth_token_env
        path = f"accounts.{name}.auth_token_env" if own else "twilio.auth_token_env"
        if env is None:
            issues.append(ConfigIssue(
                path, None, f"webhook signatures of account {name!r} cannot be checked: name "
                "the environment variable holding its provider auth token (or set [twilio] "
                "validate_signatures = false for local testing only)"))
        elif not os.environ.get(env):
            issues.append(ConfigIssue(path, env, "the environment variable is not set or empty; "
                                      "export the provider's auth token in it"))
    return issues


def stream_url_for(stack: Stack, number: str) -> str | None:
    """The agent media stream for ``number``: the number's, else its account's, else [twilio]'s."""
    spec = stack.numbers.get(number)
    if spec is None:
        return None
    return spec.stream_url or stack.accounts[spec.account].stream_url or stack.twilio.stream_url


# TwiML ------------------------------------------------------------------------------------
def twiml(response: VoiceResponse) -> Response:
    return Response(content=str(response), media_type=XML)


def say(response: VoiceResponse, message: str, prompts: Prompts) -> None:
    """``<Say>`` in the number's voice and language (each attribute only when set)."""
    options = {name: value for name, value in (("voice", prompts.voice),
                                                ("language", prompts.language)) if value}
    response.say(message, **options)


def say_and_hang_up(message: str, prompts: Prompts) -> VoiceResponse:
    response = VoiceResponse()
    say(response, message, prompts)
    response.hangup()
    return response


def connect_twiml(stream_url: str, parameters: Mapping[str, str], *,
                  status_callback: str | None = None) -> VoiceResponse:
    """Connect the caller to the agent's media stream, passing ``parameters`` to it
    (``status_callback``: where the provider reports the stream's start and stop)."""
    response = VoiceResponse()
    options = {} if status_callback is None else {"status_callback": status_callback,
                                                  "status_callback_method": "POST"}
    stream = response.connect().stream(url=stream_url, **options)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    return response


@dataclass(frozen=True)
class Heard:
    """What a held caller has already been told, carried in the hold redirect's URL.

    ``held=1``: the hold message was said; ``pos=N``: the position last said. It changes
    only what is said, never the decision (the gate decides from the call alone), and the
    provider signs the URL with its query, so nobody else can forge it.
    """

    hold_message: bool = False
    position: int | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Heard:
        position = query.get("pos", "")
        return cls(hold_message=query.get("held") == "1",
                   position=int(position) if position.isascii() and position.isdigit()
                   else None)

    def query(self) -> dict[str, str]:
        marks = {"held": "1"} if self.hold_message else {}
        return marks if self.position is None else {**marks, "pos": str(self.position)}


def hold_twiml(position: int | None, prompts: Prompts, settings: TwilioSettings, heard: Heard,
               redirect: Callable[[Heard], str]) -> VoiceResponse:
    """One hold cycle: anything new to say, then the music clip once (or a pause), then re-poll.

    The first cycle says the hold message (and the position) and re-polls as soon as it is
    said, so its length is the message's, never the message's plus a clip's; later cycles
    say the position only when it differs from the last one said (``say_position``), then
    play the clip or pause. ``redirect`` gives the URL of the next poll, carrying what the
    caller will then have heard.
    """
    response = VoiceResponse()
    greeting = "" if heard.hold_message else prompts.hold_message
    told = position if settings.say_position else None
    words = [greeting]
    if told is not None and told != heard.position:
        words.append(f"You are number {told} in line.")
    text = " ".join(word for word in words if word).strip()
    if text:
        say(response, text, prompts)
    if not greeting:
        if prompts.hold_music_url:
            response.play(prompts.hold_music_url)  # once: the clip's end is the next poll
        else:
            response.pause(length=max(1, round(settings.hold_pause)))
    response.redirect(redirect(Heard(hold_message=True, position=told)), method="POST")
    return response


def refuse_twiml(message: str, style: str, prompts: Prompts, *, answered: bool) -> VoiceResponse:
    """The overflow message and a hang-up, or a busy/rejected signal before answering.

    ``<Reject>`` only works on a call not yet answered; a caller already on hold (the
    provider says ``CallStatus = in-progress``) hears the message instead.
    """
    if style == "hangup" or answered:
        return say_and_hang_up(message, prompts)
    response = VoiceResponse()
    response.reject(reason=style)
    return response


# the requests -------------------------------------------------------------------------------
class Webhook:
    """One provider request: its form fields, the URL it signed, and our public base URL."""

    def __init__(self, request: Request, body: bytes, settings: TwilioSettings) -> None:
        pairs = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        self.form: ImmutableMultiDict[str, str] = ImmutableMultiDict(pairs)
        self.request = request
        self.base_url = _base_url(request, settings)
        query = request.url.query
        self.signed_url = self.base_url + request.url.path + (f"?{query}" if query else "")

    def get(self, name: str) -> str:
        return self.form.get(name) or ""

    def signature_ok(self, token: str) -> bool:
        signature = self.request.headers.get(SIGNATURE_HEADER)
        if not signature:
            return False
        valid: bool = RequestValidator(token).validate(self.signed_url, self.form, signature)
        return valid

    def url(self, path: str, **query: str) -> str:
        """An absolute URL of this server, as the provider reaches it."""
        return self.base_url + path + (f"?{urlencode(query)}" if query else "")


def _base_url(request: Request, settings: TwilioSettings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    scheme = request.url.scheme
    host = request.headers.get("host") or request.url.netloc
    client = request.client.host if request.client else ""
    if _trusted(client, settings.trusted_proxies):
        scheme = _first(request.headers.get("x-forwarded-proto")) or scheme
        host = _first(request.headers.get("x-forwarded-host")) or host
    return f"{scheme}://{host}"


def _first(header: str | None) -> str:
    """The client-facing value of a possibly comma-separated forwarded header."""
    return (header or "").split(",")[0].strip()


def _trusted(client: str, proxies: tuple[str, ...]) -> bool:
    if not client or not proxies:
        return False
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in network for network in _networks(proxies))


@lru_cache(maxsize=8)
def _networks(
    proxies: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for entry in proxies:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:  # refused at start; a bad entry trusts nobody
            continue
    return tuple(networks)


def twilio_router(gate: Gate, *, decide: Decide, release: Release, renew: Renew,
                  insecure: bool = False, campaigns: Campaigns | None = None) -> APIRouter:
    """The webhook routes for ``gate``; ``decide``/``release``/``renew`` are the app's, metered.

    Settings are read from ``gate.stack`` on every request, so a reload applies at once.
    ``campaigns`` (``serve --campaigns``) receive the facts of their calls: answered, the
    final status with ``AnsweredBy`` (:mod:`callgate.service.campaigns`).
    """
    campaigns = campaigns if campaigns is not None else Campaigns()
    router = APIRouter(prefix="/twilio", tags=["twilio"])

    def account_of(number: str) -> str | None:
        spec = gate.stack.numbers.get(number)
        return None if spec is None else spec.account

    async def receive(request: Request, our_number: str, account_hint: str | None = None
                      ) -> Webhook | Response:
        """The parsed webhook, or a 403 when its signature does not verify.

        ``our_number`` names the form field holding our number (``To`` for an incoming
        call, ``From`` for an outbound one): its account's auth token signed the request.
        A stream's status callback carries no number: ``account_hint`` (from the URL we
        gave, which the signature covers) names the account instead.
        """
        stack = gate.stack
        hook = Webhook(request, await request.body(), stack.twilio)
        if insecure or not stack.twilio.validate_signatures:
            log.warning("webhook %s: signature NOT validated (validate_signatures = false or "
                        "--insecure-webhooks): anyone can take and free slots", request.url.path)
            return hook
        number = hook.get(our_number)
        account = account_of(number) if account_hint is None else (
            account_hint if account_hint in stack.accounts else None)
        env = (account and stack.accounts[account].auth_token_env) or stack.twilio.auth_token_env
        token = os.environ.get(env) if env else None
        if not token:
            log.error("webhook %s for %r: no auth token to check its signature (%s is not set)",
                      request.url.path, number, env or "no auth_token_env configured")
        elif hook.signature_ok(token):
            return hook
        else:
            log.warning("webhook %s from %s: bad or missing %s for %s; refused",
                        request.url.path, request.client.host if request.client else "?",
                        SIGNATURE_HEADER, hook.signed_url)
        return Response("invalid webhook signature\n", status_code=403, media_type="text/plain")

    def agent(hook: Webhook, number: str, call_id: str, account: str,
              keys: Mapping[str, str], *, stream_status: str | None = None,
              **extra: str) -> Response | None:
        """TwiML connecting the agent's stream, or None when the number has no stream URL."""
        stream_url = stream_url_for(gate.stack, number)
        if stream_url is None:
            log.error("no stream_url for %s: set [twilio] stream_url or the number's", number)
            return None
        path = f"/v1/calls/{quote(call_id, safe='')}"
        lease_ttl = gate.stack.gate.lease_ttl
        parameters = {
            "call_id": call_id, "account": account,
            **{f"key_{provider}": key for provider, key in keys.items()},
            "renew_url": hook.url(f"{path}/renew", account=account, ttl_s=f"{lease_ttl:g}"),
            "renew_every_s": f"{lease_ttl / 3:g}",
            "release_url": hook.url(path, account=account),
            **extra,
        }
        return twiml(connect_twiml(stream_url, parameters, status_callback=stream_status))

    @router.post("/voice", response_class=Response)
    async def voice(request: Request) -> Response:
        """An incoming call (or a held caller's redirect): connect, hold or refuse it."""
        received = await receive(request, "To")
        if isinstance(received, Response):
            return received
        hook = received
        call_sid, number = hook.get("CallSid"), hook.get("To")
        account = account_of(number)
        prompts = prompts_for(gate.stack, number)
        if account is None or not call_sid:
            log.warning("voice webhook for unknown number %r (CallSid %r): caller told, hung up",
                        number, call_sid)
            return twiml(say_and_hang_up(UNKNOWN_NUMBER_MESSAGE, prompts))
        stack = gate.stack
        if stream_url_for(stack, number) is None:  # checked at start; a reload may drop it
            log.error("no stream_url for %s: set [twilio] stream_url or the number's", number)
            return twiml(say_and_hang_up(NOT_SET_UP_MESSAGE, prompts))
        call = Call(call_sid, "inbound", number, remote=hook.get("From") or None)
        try:
            decision = await decide(call, stack.webhook_lease_ttl(), "twilio")
        except CallConflictError:
            log.error("CallSid %s came back for another number or caller; refused", call_sid)
            return twiml(say_and_hang_up(NOT_SET_UP_MESSAGE, prompts))
        if decision.outcome is Outcome.ADMITTED and decision.lease is not None:
            answer = agent(hook, number, call_sid, account, decision.lease.keys)
            if answer is not None:
                return answer
            await release(call_sid, account)
            return twiml(say_and_hang_up(NOT_SET_UP_MESSAGE, prompts))
        if decision.outcome is Outcome.QUEUED:
            position = decision.queue.position if decision.queue is not None else None
            heard = Heard.from_query(request.query_params)
            return twiml(hold_twiml(position, prompts, stack.twilio, heard,
                                    lambda next_heard: hook.url("/twilio/voice",
                                                                **next_heard.query())))
        message = decision.message or prompts.overflow_message
        if decision.reason is Reason.CALL_ENDED:
            message = NOT_SET_UP_MESSAGE
        answered = hook.get("CallStatus") == "in-progress"
        return twiml(refuse_twiml(message, stack.twilio.reject_style, prompts,
                                  answered=answered))

    @router.post("/outbound", response_class=Response)
    async def outbound(request: Request, call_id: str = "") -> Response:
        """The callee answered a call the dialler acquired as ``call_id``: connect the agent."""
        received = await receive(request, "From")
        if isinstance(received, Response):
            return received
        hook = received
        number = hook.get("From")
        account = account_of(number)
        prompts = prompts_for(gate.stack, number)
        if not call_id or account is None:
            log.error("outbound webhook without ?call_id= or from a number not in the stack "
                      "(call_id %r, From %r, CallSid %r): hung up", call_id, number,
                      hook.get("CallSid"))
            return twiml(say_and_hang_up(LEASE_LOST_MESSAGE, prompts))
        result = await renew(call_id, account, gate.stack.webhook_lease_ttl())
        if result.status is RenewStatus.EXPIRED:
            log.warning("outbound call %s (CallSid %s) answered after its lease expired: it "
                        "rang longer than its TTL ([outbound] dial_ttl = %gs unless the dialler "
                        "sent ttl_s); dial with a ring timeout <= dial_ttl. Hung up", call_id,
                        hook.get("CallSid"), gate.stack.outbound.dial_ttl)
            return twiml(say_and_hang_up(LEASE_LOST_MESSAGE, prompts))
        if result.status is not RenewStatus.RENEWED or result.lease is None:
            log.warning("outbound call %s (CallSid %s) answered but its lease is %s: hung up",
                        call_id, hook.get("CallSid"), result.status.value)
            return twiml(say_and_hang_up(LEASE_LOST_MESSAGE, prompts))
        await campaigns.arecord(call_id, "answered", provider_id=hook.get("CallSid") or None)
        if hook.get("AnsweredBy").startswith(("machine", "fax")) \
                and await _voicemail_policy(campaigns, call_id) == "hangup":
            # a machine answered and the campaign says hang up: the status callback then
            # releases the lease and tells the dialler (AnsweredBy)
            log.info("outbound call %s answered by %s: hung up (voicemail = hangup)", call_id,
                     hook.get("AnsweredBy"))
            response = VoiceResponse()
            response.hangup()
            return twiml(response)
        # a campaign's call: the stream's start tells the dialler when the agent started
        watched = bool(campaigns) and bool(campaign_of(call_id))
        answer = agent(hook, number, call_id, account, result.lease.keys,
                       stream_status=hook.url("/twilio/stream", call_id=call_id,
                                              account=account) if watched else None,
                       provider_call_id=hook.get("CallSid"))
        if answer is not None:
            return answer
        await release(call_id, account)
        return twiml(say_and_hang_up(NOT_SET_UP_MESSAGE, prompts))

    @router.post("/stream", status_code=204, response_class=Response)
    async def stream(request: Request, call_id: str = "", account: str = "") -> Response:
        """A campaign call's media stream started: its agent is on the line."""
        received = await receive(request, "From", account_hint=account)
        if isinstance(received, Response):
            return received
        if received.get("StreamEvent") == "stream-started" and call_id:
            await campaigns.arecord(call_id, "agent")
        return Response(status_code=204)

    @router.post("/status", status_code=204, response_class=Response)
    async def status(request: Request, call_id: str = "") -> Response:
        """A call's status changed; a final status releases its lease or its place in line."""
        # An outbound call's id comes from the URL the dialler set; our number is then From.
        received = await receive(request, "From" if call_id else "To")
        if isinstance(received, Response):
            return received
        hook = received
        number = hook.get("From") if call_id else hook.get("To")
        lease_id = call_id or hook.get("CallSid")
        state = hook.get("CallStatus")
        account = account_of(number)
        if state in FINAL_STATUSES and lease_id and account is not None:
            result = await release(lease_id, account)
            log.info("status %s for %s (%s): released=%s cancelled=%s", state, lease_id,
                     account, result.released, result.cancelled)
        if state in FINAL_STATUSES and call_id:  # after the release: the dialler reads it
            await campaigns.arecord(call_id, "status", status=state,
                                    answered_by=hook.get("AnsweredBy") or None)
        return Response(status_code=204)

    return router


async def _voicemail_policy(campaigns: Campaigns, call_id: str) -> str:
    """The campaign's ``voicemail`` (``hangup`` or ``agent``), as its dialler recorded it."""
    import anyio.to_thread

    def read() -> str:
        file = campaigns.named(campaign_of(call_id)) if campaigns else None
        return "agent" if file is None else file.meta().get("voicemail", "hangup")

    return await anyio.to_thread.run_sync(read)
