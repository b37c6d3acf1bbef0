"""Twilio-style voice webhooks: whole calls, signed exactly as the provider signs them."""

from __future__ import annotations

import logging
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from callgate.config import Stack, load_stack, parse_stack
from callgate.errors import ConfigError
from callgate.gate import Gate
from callgate.model import Call
from callgate.prompts import Prompts
from callgate.service.app import create_app
from callgate.service.twilio import say_and_hang_up
from callgate.testing import FakeClock, memory_gate, serving

pytestmark = pytest.mark.anyio

N1 = "+14155550100"  # acme, one line, the account's stream
N2 = "+14155550101"  # acme, one line, its own stream
G1 = "+14155550200"  # globex (its own auth token), the [twilio] default stream
CALLER = "+12025550123"
PUBLIC = "https://gate.example.com"
ACME_TOKEN = "acme-twilio-auth-token"
GLOBEX_TOKEN = "globex-twilio-auth-token"
HOLD = "Please hold."
OVERFLOW = "We are full. Call again later."

STACK = f"""
[gate]
lease_ttl = "30s"
max_call_duration = "2h"
poll_timeout = "1m"
store = "memory://"

[trunks.t]
max_concurrent = 10

[plans.basic]
max_concurrent = 10

[accounts.acme]
plan = "basic"
stream_url = "wss://acme.test/stream"

[accounts.globex]
plan = "basic"
auth_token_env = "GLOBEX_TWILIO_TOKEN"

[numbers."{N1}"]
account = "acme"
trunk = "t"
max_concurrent = 1

[numbers."{N2}"]
account = "acme"
trunk = "t"
max_concurrent = 1
stream_url = "wss://n2.test/stream"

[numbers."{G1}"]
account = "globex"
trunk = "t"
max_concurrent = 1

[providers.llm]
keys = ["key-a", "key-b"]
sessions_per_key = 5

[inbound]
queue_max = 1
max_wait = "2m"
hold_message = "{HOLD}"
overflow_message = "{OVERFLOW}"

[twilio]
auth_token_env = "TWILIO_AUTH_TOKEN"
public_url = "{PUBLIC}"
stream_url = "wss://default.test/stream"
hold_pause = "5s"
say_position = true
"""




@pytest.fixture(autouse=True)
def auth_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", ACME_TOKEN)
    monkeypatch.setenv("GLOBEX_TWILIO_TOKEN", GLOBEX_TOKEN)


def make_stack(text: str = STACK) -> Stack:
    return parse_stack(tomllib.loads(text))




def elements(response: httpx.Response) -> list[tuple[str, dict[str, str], str]]:
    """The TwiML verbs of a 200 answer, in order: (tag, attributes, text)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.content)
    assert root.tag == "Response"
    return [(child.tag, dict(child.attrib), (child.text or "").strip()) for child in root]


def stream_of(response: httpx.Response) -> tuple[str, dict[str, str]]:
    """The stream URL and <Parameter>s of a <Connect><Stream> answer."""
    [(tag, _, _)] = elements(response)
    assert tag == "Connect"
    connect = ET.fromstring(response.content).find("Connect")
    assert connect is not None
    [stream] = list(connect)
    assert stream.tag == "Stream"
    parameters = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    assert len(parameters) == len(stream)  # nothing but parameters inside the stream
    return stream.attrib["url"], parameters


@dataclass
class Phone:
    """Plays the provider: signs each webhook with an account's auth token, as Twilio does."""

    http: httpx.AsyncClient
    gate: Gate
    clock: FakeClock
    public: str = PUBLIC

    async def post(self, path: str, params: dict[str, str], *, token: str | None = ACME_TOKEN,
                   signed_url: str | None = None, headers: dict[str, str] | None = None
                   ) -> httpx.Response:
        url = signed_url or self.public + path
        sent = dict(headers or {})
        if token is not None:
            sent["X-Twilio-Signature"] = RequestValidator(token).compute_signature(url, params)
        return await self.http.post(path, content=urlencode(params), headers={
            "content-type": "application/x-www-form-urlencoded", **sent})

    async def ring(self, sid: str, to: str = N1, *, token: str = ACME_TOKEN,
                   status: str = "ringing") -> httpx.Response:
        params = {"CallSid": sid, "AccountSid": "AC123", "From": CALLER, "To": to,
                  "CallStatus": status, "Direction": "inbound"}
        return await self.post("/twilio/voice", params, token=token)

    async def status(self, sid: str, state: str, to: str = N1, *, token: str = ACME_TOKEN,
                     query: str = "", from_: str = CALLER) -> httpx.Response:
        params = {"CallSid": sid, "AccountSid": "AC123", "From": from_, "To": to,
                  "CallStatus": state}
        return await self.post(f"/twilio/status{query}", params, token=token)

    async def follow(self, hold: httpx.Response, sid: str, to: str = N1, *,
                     token: str = ACME_TOKEN) -> httpx.Response:
        """The provider following a hold answer's <Redirect>: the next poll, signed over its URL."""
        [url] = [text for tag, _, text in elements(hold) if tag == "Redirect"]
        assert url.startswith(self.public)
        params = {"CallSid": sid, "AccountSid": "AC123", "From": CALLER, "To": to,
                  "CallStatus": "in-progress", "Direction": "inbound"}
        return await self.post(url.removeprefix(self.public), params, token=token)

    def row(self, layer: str, scope: str) -> dict[str, Any]:
        layers: list[dict[str, Any]] = self.gate.usage()["layers"]
        [row] = [r for r in layers if (r["layer"], r["scope"]) == (layer, scope)]
        return row


@asynccontextmanager
async def phone(text: str = STACK, **app_options: Any) -> AsyncIterator[Phone]:
    clock = FakeClock()
    gate = memory_gate(make_stack(text), clock)
    async with serving(create_app(gate, **app_options)) as http:
        yield Phone(http, gate, clock)


# inbound calls -------------------------------------------------------------------------
@pytest.mark.parametrize(("number", "stream"), [
    (N1, "wss://acme.test/stream"), (N2, "wss://n2.test/stream"), (G1, "wss://default.test/stream")])
async def test_admitted_call_connects_the_agent_stream_with_lease_parameters(
    number: str, stream: str
) -> None:
    """Admitted: <Connect><Stream> to the number's, account's or default stream, with the lease."""
    token = GLOBEX_TOKEN if number == G1 else ACME_TOKEN
    account = "globex" if number == G1 else "acme"
    async with phone() as p:
        url, parameters = stream_of(await p.ring("CA1", number, token=token))
        assert url == stream
        assert parameters == {
            "call_id": "CA1", "account": account, "key_llm": "key-a",
            "renew_url": f"{PUBLIC}/v1/calls/CA1/renew?account={account}&ttl_s=30",
            "renew_every_s": "10",
            "release_url": f"{PUBLIC}/v1/calls/CA1?account={account}",
        }
        lease = p.gate.acquire(Call("CA1", "inbound", number, remote=CALLER)).lease
        assert lease is not None and lease.ttl_s == 7200.0  # webhook_lease_ttl = max duration
        assert p.row("number", number)["in_use"] == 1


async def test_the_media_server_renews_with_the_url_it_was_given() -> None:
    """The renew URL from the stream parameters turns the long webhook lease into a heartbeat."""
    async with phone() as p:
        _, parameters = stream_of(await p.ring("CA1"))
        p.clock.advance(60)
        renewed = await p.http.post(parameters["renew_url"].removeprefix(PUBLIC))
        assert renewed.status_code == 200, renewed.text
        assert renewed.json()["lease"]["expires_at"] == p.clock.now + 30.0
        released = await p.http.delete(parameters["release_url"].removeprefix(PUBLIC))
        assert released.json() == {"released": True, "cancelled": False}


async def test_queued_caller_holds_then_is_connected_when_the_other_call_ends() -> None:
    """Queued: hold message and position, pause, marked redirect; a hang-up frees a line."""
    async with phone() as p:
        stream_of(await p.ring("CA1"))
        hold = await p.ring("CA2")
        redirect = ("Redirect", {"method": "POST"}, f"{PUBLIC}/twilio/voice?held=1&pos=1")
        assert elements(hold) == [("Say", {}, f"{HOLD} You are number 1 in line."), redirect]
        p.clock.advance(5)
        again = await p.follow(hold, "CA2")
        assert elements(again) == [("Pause", {"length": "5"}, ""), redirect]  # still first
        done = await p.status("CA1", "completed")
        assert done.status_code == 204
        p.clock.advance(5)
        _, parameters = stream_of(await p.follow(again, "CA2"))
        assert parameters["call_id"] == "CA2"
        assert p.row("number", N1) == {"layer": "number", "scope": N1, "in_use": 1, "cap": 1,
                                       "queued": 0}


MUSIC = "https://cdn.test/hold-12s.mp3"
WITH_MUSIC = STACK.replace("queue_max = 1", "queue_max = 5").replace(
    'hold_pause = "5s"', f'hold_pause = "5s"\nhold_music_url = "{MUSIC}"\nhold_music_loop = "12s"')


async def test_a_held_caller_hears_the_message_once_then_the_clip_each_cycle() -> None:
    """Hold cycles: the message once, the position when it changed, then the clip every cycle."""
    async with phone(WITH_MUSIC) as p:
        stream_of(await p.ring("CA1"))
        await p.ring("CA2")  # first in line
        heard = [await p.ring("CA3")]  # second in line
        play = ("Play", {}, MUSIC)

        def redirect(position: int) -> tuple[str, dict[str, str], str]:
            return ("Redirect", {"method": "POST"},
                    f"{PUBLIC}/twilio/voice?held=1&pos={position}")

        assert elements(heard[-1]) == [("Say", {}, f"{HOLD} You are number 2 in line."),
                                       redirect(2)]  # the next poll as soon as it is said
        p.clock.advance(8)
        heard.append(await p.follow(heard[-1], "CA3"))
        assert elements(heard[-1]) == [play, redirect(2)]
        assert (await p.status("CA2", "canceled")).status_code == 204  # the caller ahead hangs up
        p.clock.advance(12)
        heard.append(await p.follow(heard[-1], "CA3"))
        assert elements(heard[-1]) == [("Say", {}, "You are number 1 in line."), play,
                                       redirect(1)]
        for _ in range(2):
            p.clock.advance(12)
            heard.append(await p.follow(heard[-1], "CA3"))
            assert elements(heard[-1]) == [play, redirect(1)]
        p.clock.advance(5)
        await p.status("CA1", "completed")  # between two polls: CA3 is promoted now
        assert p.row("number", N1)["in_use"] == 1 and p.row("number", N1)["queued"] == 0
        p.clock.advance(7)
        _, parameters = stream_of(await p.follow(heard[-1], "CA3"))
        assert parameters["call_id"] == "CA3"
        said = [text for answer in heard for tag, _, text in elements(answer) if tag == "Say"]
        assert sum(HOLD in text for text in said) == 1


async def test_without_say_position_later_cycles_say_nothing_at_all() -> None:
    """say_position off: the message on the first poll, then only pauses; no pos in the URL."""
    async with phone(STACK.replace("say_position = true", "say_position = false")) as p:
        await p.ring("CA1")
        first = await p.ring("CA2")
        redirect = ("Redirect", {"method": "POST"}, f"{PUBLIC}/twilio/voice?held=1")
        assert elements(first) == [("Say", {}, HOLD), redirect]
        p.clock.advance(5)
        assert elements(await p.follow(first, "CA2")) == [("Pause", {"length": "5"}, ""),
                                                          redirect]


async def test_the_hold_marker_changes_what_is_said_never_the_queue() -> None:
    """A first poll already marked held=1 is queued behind the callers ahead, like any other."""
    async with phone(WITH_MUSIC) as p:
        await p.ring("CA1")
        await p.ring("CA2")
        params = {"CallSid": "CA3", "From": CALLER, "To": N1, "CallStatus": "ringing"}
        marked = elements(await p.post("/twilio/voice?held=1&pos=1", params))
        assert marked[0] == ("Say", {}, "You are number 2 in line.")
        assert [e["call_id"] for e in p.gate.queue()] == ["CA2", "CA3"]
        for index, query in enumerate(("held=yes&pos=-1", "pos=%C2%B2", "pos=")):
            bad = elements(await p.post(f"/twilio/voice?{query}",
                                        {**params, "CallSid": f"CA{4 + index}"}))
            assert bad[0] == ("Say", {}, f"{HOLD} You are number {3 + index} in line.")


async def test_overflow_says_the_overflow_message_and_hangs_up() -> None:
    """Past queue_max the caller hears the overflow message, then <Hangup/> (still a 200)."""
    async with phone() as p:
        await p.ring("CA1")
        await p.ring("CA2")
        assert elements(await p.ring("CA3")) == [("Say", {}, OVERFLOW), ("Hangup", {}, "")]
        assert p.row("number", N1)["queued"] == 1


VOICES = (STACK
          .replace('[accounts.acme]\nplan = "basic"\n',
                   '[accounts.acme]\nplan = "basic"\nhold_message = "Acme: please hold."\n'
                   'voice = "Polly.Joanna"\nlanguage = "en-US"\n')
          .replace('stream_url = "wss://n2.test/stream"\n',
                   'stream_url = "wss://n2.test/stream"\noverflow_message = "Line two is full."\n'
                   'voice = "Polly.Amy"\nlanguage = "en-GB"\n')
          .replace('hold_pause = "5s"', 'hold_pause = "5s"\nvoice = "alice"'))


@pytest.mark.parametrize(("number", "voice", "hold", "overflow"), [
    (N1, {"voice": "Polly.Joanna", "language": "en-US"}, "Acme: please hold.", OVERFLOW),
    (N2, {"voice": "Polly.Amy", "language": "en-GB"}, "Acme: please hold.", "Line two is full."),
    (G1, {"voice": "alice"}, HOLD, OVERFLOW),
])
async def test_words_voice_and_language_are_the_numbers_else_the_accounts_else_the_stacks(
    number: str, voice: dict[str, str], hold: str, overflow: str
) -> None:
    """Hold and overflow <Say>s carry the number's, account's or stack's words, voice, language."""
    token = GLOBEX_TOKEN if number == G1 else ACME_TOKEN
    async with phone(VOICES) as p:
        await p.ring("CA1", number, token=token)
        held = elements(await p.ring("CA2", number, token=token))
        assert held[0] == ("Say", voice, f"{hold} You are number 1 in line.")
        assert elements(await p.ring("CA3", number, token=token)) == [
            ("Say", voice, overflow), ("Hangup", {}, "")]
        # The API tells the same words: one resolution for the gate and the webhooks.
        assert p.gate.acquire(Call("CA2", "inbound", number, remote=CALLER)).message == hold
        assert p.gate.acquire(Call("CA3", "inbound", number, remote=CALLER)).message == overflow
        unknown = elements(await p.ring("CA9", "+19995550000"))  # the [twilio] token
        assert unknown[0][1] == {"voice": "alice"}  # no number, no account: the stack's voice


def test_the_example_fallback_twiml_says_the_example_overflow_message() -> None:
    """examples/twilio-fallback.xml is the TwiML the gate would answer: overflow, hang up."""
    example = Path(__file__).parents[2] / "examples"
    overflow = load_stack(example / "stack.toml").inbound.overflow_message
    root = ET.parse(example / "twilio-fallback.xml").getroot()
    ours = ET.fromstring(str(say_and_hang_up(overflow, Prompts(HOLD, overflow))))

    def verbs(response: ET.Element) -> list[tuple[str, dict[str, str], str]]:
        return [(c.tag, dict(c.attrib), (c.text or "").strip()) for c in response]

    assert root.tag == "Response"
    assert verbs(root) == verbs(ours) == [("Say", {}, overflow), ("Hangup", {}, "")]


@pytest.mark.parametrize("style", ["busy", "rejected"])
async def test_reject_style_answers_a_ringing_call_with_reject(style: str) -> None:
    """reject_style busy/rejected refuses an unanswered call with <Reject reason=...>."""
    async with phone(STACK + f'reject_style = "{style}"\n') as p:
        await p.ring("CA1")
        await p.ring("CA2")
        assert elements(await p.ring("CA3")) == [("Reject", {"reason": style}, "")]


async def test_a_caller_already_on_hold_hears_the_message_even_with_reject_style() -> None:
    """A held caller (CallStatus in-progress) who times out hears the message and a hang-up."""
    async with phone(STACK + 'reject_style = "busy"\n') as p:
        await p.ring("CA1")
        await p.ring("CA2")
        for _ in range(25):  # keep polling until max_wait (2 min) passes
            p.clock.advance(5)
            answer = elements(await p.ring("CA2", status="in-progress"))
            if answer[0][0] != "Say" or HOLD not in answer[0][2]:
                break
        assert answer == [("Say", {}, OVERFLOW), ("Hangup", {}, "")]


async def test_unknown_number_is_told_and_hung_up_without_touching_the_gate() -> None:
    """A To the stack lacks gets a spoken error and <Hangup/> in a TwiML 200, nothing held."""
    async with phone() as p:
        before = p.gate.usage()
        answer = elements(await p.ring("CA1", "+19995550000"))
        assert [tag for tag, _, _ in answer] == ["Say", "Hangup"]
        assert "not in service" in answer[0][2]
        assert p.gate.usage() == before


async def test_duplicate_webhooks_take_one_lease() -> None:
    """The provider retrying a webhook (same CallSid) gets the same TwiML and one lease."""
    async with phone() as p:
        first = await p.ring("CA1", N2)
        second = await p.ring("CA1", N2)
        assert stream_of(first) == stream_of(second)
        usage = p.gate.usage()
        assert usage["leases"] == 1
        assert p.row("number", N2)["in_use"] == 1 and p.row("account", "acme")["in_use"] == 1


async def test_a_caller_hanging_up_while_queued_leaves_the_queue() -> None:
    """A status callback for a held caller cancels its place; the line then frees for nobody."""
    async with phone() as p:
        await p.ring("CA1")
        await p.ring("CA2")
        assert p.row("number", N1)["queued"] == 1
        assert (await p.status("CA2", "canceled")).status_code == 204
        assert p.gate.queue() == []
        await p.status("CA1", "completed")
        assert p.row("number", N1)["in_use"] == 0 and p.gate.usage()["leases"] == 0


async def test_non_final_statuses_release_nothing() -> None:
    """Status callbacks for ringing or in-progress calls leave the lease held."""
    async with phone() as p:
        await p.ring("CA1")
        for state in ("ringing", "in-progress", "answered"):
            assert (await p.status("CA1", state)).status_code == 204
        assert p.row("number", N1)["in_use"] == 1


# outbound calls ---------------------------------------------------------------------------
async def test_outbound_call_acquired_bound_and_released() -> None:
    """The dialler acquires, the answer webhook connects the agent, the status callback frees."""
    async with phone() as p:
        acquired = await p.http.post("/v1/calls", json={
            "call_id": "dial-1", "direction": "outbound", "number": N1, "remote": CALLER})
        assert acquired.json()["decision"] == "admitted"
        answer = {"CallSid": "CA77", "AccountSid": "AC123", "From": N1, "To": CALLER,
                  "CallStatus": "in-progress", "Direction": "outbound-api"}
        url, parameters = stream_of(await p.post("/twilio/outbound?call_id=dial-1", answer))
        assert url == "wss://acme.test/stream"
        assert (parameters["call_id"], parameters["provider_call_id"]) == ("dial-1", "CA77")
        assert parameters["key_llm"] == "key-a"
        lease = p.gate.acquire(Call("dial-1", "outbound", N1, remote=CALLER)).lease
        assert lease is not None and lease.expires_at == p.clock.now + 7200.0
        done = await p.status("CA77", "completed", to=CALLER, from_=N1, query="?call_id=dial-1")
        assert done.status_code == 204
        assert p.row("number", N1)["in_use"] == 0


async def test_outbound_answer_without_a_live_lease_hangs_up() -> None:
    """An answered outbound call whose lease is gone (or never was) is told and hung up."""
    async with phone() as p:
        answer = {"CallSid": "CA78", "From": N1, "To": CALLER, "CallStatus": "in-progress"}
        reply = elements(await p.post("/twilio/outbound?call_id=never", answer))
        assert [tag for tag, _, _ in reply] == ["Say", "Hangup"]
        assert p.gate.usage()["leases"] == 0


async def test_unanswered_outbound_call_is_released_by_its_status_callback() -> None:
    """busy / no-answer on an outbound call's status callback frees its lease."""
    async with phone() as p:
        await p.http.post("/v1/calls", json={
            "call_id": "dial-2", "direction": "outbound", "number": N2})
        assert p.row("number", N2)["in_use"] == 1
        await p.status("CA79", "no-answer", to=CALLER, from_=N2, query="?call_id=dial-2")
        assert p.row("number", N2)["in_use"] == 0


# signatures -------------------------------------------------------------------------------
def _usage_state(gate: Gate) -> tuple[Any, Any, Any]:
    usage = gate.usage()
    return usage["layers"], usage["leases"], gate.queue()


@pytest.mark.parametrize("forgery", ["missing", "wrong token", "other url", "tampered"])
async def test_bad_or_missing_signature_is_403_and_changes_nothing(forgery: str) -> None:
    """A webhook that does not verify is refused with 403; the gate is exactly as before."""
    async with phone() as p:
        await p.ring("CA1")  # held: a forged hang-up must not free it
        before = _usage_state(p.gate)
        params = {"CallSid": "CA2", "From": CALLER, "To": N2, "CallStatus": "ringing"}
        if forgery == "missing":
            response = await p.post("/twilio/voice", params, token=None)
        elif forgery == "wrong token":
            response = await p.post("/twilio/voice", params, token="guessed")
        elif forgery == "other url":
            response = await p.post("/twilio/voice", params,
                                    signed_url="https://evil.test/twilio/voice")
        else:
            signature = RequestValidator(ACME_TOKEN).compute_signature(
                f"{PUBLIC}/twilio/voice", {**params, "To": N1})
            response = await p.http.post("/twilio/voice", data=params,
                                         headers={"X-Twilio-Signature": signature})
        assert response.status_code == 403
        forged_hangup = await p.status("CA1", "completed", token="guessed")
        assert forged_hangup.status_code == 403
        assert _usage_state(p.gate) == before


async def test_each_account_signs_with_its_own_auth_token() -> None:
    """A globex number verifies only with globex's token, not the [twilio] default one."""
    async with phone() as p:
        assert (await p.ring("CA1", G1, token=ACME_TOKEN)).status_code == 403
        assert p.row("number", G1)["in_use"] == 0
        stream_of(await p.ring("CA1", G1, token=GLOBEX_TOKEN))


PROXIED = STACK.replace(f'public_url = "{PUBLIC}"', 'trusted_proxies = ["127.0.0.0/8"]')


async def test_forwarded_headers_from_a_trusted_proxy_give_the_signed_url() -> None:
    """Behind a trusted proxy the signature is checked over X-Forwarded-Proto/Host's URL."""
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gate.example.com"}
    params = {"CallSid": "CA1", "From": CALLER, "To": N1, "CallStatus": "ringing"}
    async with phone(PROXIED) as p:
        answer = await p.post("/twilio/voice", params, headers=forwarded)
        _, parameters = stream_of(answer)
        assert parameters["release_url"] == f"{PUBLIC}/v1/calls/CA1?account=acme"


async def test_forwarded_headers_from_an_untrusted_client_are_ignored() -> None:
    """From a client outside trusted_proxies X-Forwarded-* is ignored: only its own URL verifies."""
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gate.example.com"}
    params = {"CallSid": "CA1", "From": CALLER, "To": N1, "CallStatus": "ringing"}
    gate = memory_gate(make_stack(PROXIED), FakeClock())
    async with serving(create_app(gate), client=("203.0.113.7", 5000)) as http:
        p = Phone(http, gate, FakeClock())
        spoofed = await p.post("/twilio/voice", params, headers=forwarded)
        assert spoofed.status_code == 403
        assert gate.usage()["leases"] == 0
        direct = await p.post("/twilio/voice", params, headers=forwarded,
                              signed_url="http://callgate.test/twilio/voice")
        _, parameters = stream_of(direct)
        assert parameters["renew_url"].startswith("http://callgate.test/v1/calls/CA1/renew")


async def test_insecure_webhooks_skip_the_check_and_warn_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """--insecure-webhooks admits unsigned webhooks and logs a WARNING at start and per call."""
    with caplog.at_level(logging.WARNING):
        async with phone(insecure_webhooks=True) as p:
            started = [r for r in caplog.records if "NOT validated" in r.getMessage()]
            assert started and started[0].levelno == logging.WARNING
            stream_of(await p.ring("CA1", token="anything"))
            response = await p.post("/twilio/voice", {"CallSid": "CA2", "To": N2}, token=None)
            stream_of(response)
    per_request = [r for r in caplog.records if r.name == "callgate.twilio"
                   and "NOT validated" in r.getMessage()]
    assert len(per_request) == 2


# configuration --------------------------------------------------------------------------
def test_webhooks_without_a_stream_url_are_refused_at_start() -> None:
    """A number with no stream URL anywhere is a ConfigError at start naming the number."""
    text = STACK.replace('stream_url = "wss://default.test/stream"\n', "")
    with pytest.raises(ConfigError) as caught:
        create_app(memory_gate(make_stack(text), FakeClock()))
    assert f'numbers."{G1}".stream_url' in str(caught.value)
    assert f'numbers."{N1}"' not in str(caught.value)  # the account's stream covers it


def test_an_unset_auth_token_variable_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """An auth_token_env naming an unset variable is a ConfigError naming key and variable."""
    monkeypatch.delenv("GLOBEX_TWILIO_TOKEN")
    with pytest.raises(ConfigError) as caught:
        create_app(memory_gate(make_stack(), FakeClock()))
    assert "accounts.globex.auth_token_env = 'GLOBEX_TWILIO_TOKEN'" in str(caught.value)


def test_a_hold_pause_past_the_poll_timeout_is_refused_at_start() -> None:
    """hold_pause >= poll_timeout would drop held callers between polls: refused at start."""
    with pytest.raises(ConfigError) as caught:
        create_app(memory_gate(make_stack(STACK.replace('"5s"', '"2m"')), FakeClock()))
    assert "twilio.hold_pause" in str(caught.value)


async def test_without_a_twilio_table_there_are_no_webhook_routes() -> None:
    """A stack without [twilio] serves no /twilio routes (and needs no auth tokens)."""
    text = STACK.split("[twilio]")[0]
    async with phone(text) as p:
        assert (await p.ring("CA1")).status_code == 404
