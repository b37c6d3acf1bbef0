"""Forwarded headers through the real server `serve` runs: only `trusted_proxies` decide.

uvicorn applies ``X-Forwarded-For``/``-Proto`` itself by default, from any loopback peer;
`serve` turns that off, so a spoofing client on this host changes neither the peer address
callgate judges nor the URL a webhook signature is checked against.
"""

from __future__ import annotations

import socket
import threading
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from tests.stacks import N1, one_number
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from callgate.config import parse_stack
from callgate.gate import Gate
from callgate.service.app import create_app
from callgate.service.server import server_config
from callgate.testing import memory_gate

TOKEN = "twilio-auth-token"
SPOOF = {"X-Forwarded-For": "10.1.2.3", "X-Forwarded-Proto": "https",
         "X-Forwarded-Host": "evil.example"}
START_TIMEOUT_S = 15.0


def stack_text(trusted: str) -> str:
    return one_number(extra=f"""
[twilio]
auth_token_env = "FORWARDED_TEST_TOKEN"
stream_url = "wss://agents.test/stream"
trusted_proxies = [{trusted}]
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def served(gate: Gate) -> Iterator[str]:
    """The app on a real uvicorn server built as `serve` builds it, in a thread."""
    config = server_config(create_app(gate), host="127.0.0.1", port=_free_port(),
                           log_level="warning", json_logs=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for a real server to bind, with a deadline
    try:
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT_S)


def ring(url: str, signed_url: str, headers: dict[str, str]) -> httpx.Response:
    params = {"CallSid": "CA1", "From": "+12025550123", "To": N1, "CallStatus": "ringing"}
    signature = RequestValidator(TOKEN).compute_signature(signed_url, params)
    return httpx.post(f"{url}/twilio/voice", content=urlencode(params), timeout=10.0, headers={
        "content-type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature,
        **headers})


def renew_url(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    root = ET.fromstring(response.content)
    values = {p.attrib["name"]: p.attrib["value"] for p in root.iter("Parameter")}
    return values["renew_url"]


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORWARDED_TEST_TOKEN", TOKEN)


def test_serve_leaves_forwarded_headers_to_callgate() -> None:
    """The server `serve` builds applies no forwarded header itself (proxy_headers off)."""
    config = server_config(create_app(memory_gate(parse_stack(tomllib.loads(
        stack_text('"10.0.0.0/8"'))))), host="127.0.0.1", port=8080, log_level="info",
        json_logs=False)
    assert config.proxy_headers is False


def test_a_spoofed_forwarded_for_from_an_untrusted_loopback_peer_changes_nothing() -> None:
    """X-Forwarded-For naming a trusted proxy, sent by an untrusted peer, is not believed."""
    gate = memory_gate(parse_stack(tomllib.loads(stack_text('"10.0.0.0/8"'))))
    with served(gate) as url:
        forged = ring(url, "https://evil.example/twilio/voice", SPOOF)
        assert forged.status_code == 403
        assert gate.usage()["leases"] == 0
        honest = ring(url, f"{url}/twilio/voice", SPOOF)
        assert renew_url(honest).startswith(f"{url}/v1/calls/CA1/renew")
        assert gate.usage()["leases"] == 1


def test_a_peer_in_trusted_proxies_is_believed_through_the_real_server() -> None:
    """From a peer callgate trusts, X-Forwarded-Proto/Host give the URL that was signed."""
    gate = memory_gate(parse_stack(tomllib.loads(stack_text('"127.0.0.1"'))))
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gate.example.com"}
    with served(gate) as url:
        answer = ring(url, "https://gate.example.com/twilio/voice", headers)
        assert renew_url(answer).startswith("https://gate.example.com/v1/calls/CA1/renew")
