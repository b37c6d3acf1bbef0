"""Request bounds: one model's limits on every store and route; 413 past 64 KiB everywhere."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
from tests.conftest import GateFactory
from tests.stacks import N1, one_number

from callgate.client_wire import quoted_id
from callgate.model import (
    ATTEMPT_MAX,
    CALL_ID_MAX_BYTES,
    PRIORITY_MAX,
    PRIORITY_MIN,
    REMOTE_MAX_BYTES,
    Call,
)
from callgate.service.app import create_app
from callgate.service.body_limit import MAX_BODY_BYTES
from callgate.testing import memory_gate, serving

pytestmark = pytest.mark.anyio

# One line: the second caller waits.
STACK = one_number(1, gate='poll_timeout = "1h"', extra="""
[resources.db]
capacity = 4

[inbound]
queue_max = 5

[twilio]
stream_url = "wss://agents.test/stream"
validate_signatures = false
""")

OUT_OF_RANGE: list[tuple[dict[str, Any], str]] = [
    ({"priority": PRIORITY_MAX + 1}, "body.priority"),
    ({"priority": PRIORITY_MIN - 1}, "body.priority"),
    ({"priority": 2**64}, "body.priority"),
    ({"priority": 2**70}, "body.priority"),
    ({"priority": -(2**80)}, "body.priority"),
    ({"priority": True}, "body.priority"),
    ({"priority": "3"}, "body.priority"),
    ({"attempt": 0}, "body.attempt"),
    ({"attempt": ATTEMPT_MAX + 1}, "body.attempt"),
    ({"attempt": 2**64}, "body.attempt"),
    ({"call_id": ""}, "body.call_id"),
    ({"call_id": "x" * (CALL_ID_MAX_BYTES + 1)}, "body.call_id"),
    ({"call_id": "x" * 60_000}, "body.call_id"),
    ({"call_id": "has space"}, "body.call_id"),
    ({"call_id": "tab\there"}, "body.call_id"),
    ({"call_id": "caf\u00e9"}, "body.call_id"),
    ({"call_id": "del\x7f"}, "body.call_id"),
    ({"remote": "x" * (REMOTE_MAX_BYTES + 1)}, "body.remote"),
    ({"remote": "\u00e9" * 129}, "body.remote"),  # 258 bytes in 129 characters
    ({"remote": "+1202\n5550123"}, "body.remote"),
    ({"remote": "\x00"}, "body.remote"),
    ({"remote": "\u0085"}, "body.remote"),
    ({"remote": "\ud800"}, "body.remote"),
    ({"number": "14155550100"}, "body.number"),
    ({"number": "+0155550100"}, "body.number"),
    ({"number": "+1415555010012345"}, "body.number"),
    ({"number": "+1 415 555 0100"}, "body.number"),
    ({"resources": {"db": 2**63}}, "body.resources.db"),
]


def request_body(**extra: Any) -> dict[str, Any]:
    return {"call_id": "c1", "direction": "inbound", "number": N1, **extra}


def raw(document: dict[str, Any]) -> bytes:
    """JSON bytes, lone surrogates kept as the escapes a client could send."""
    return json.dumps(document).encode()


@pytest.fixture
async def api(make_gate: GateFactory) -> AsyncIterator[Any]:
    gate, _ = make_gate(STACK)
    async with serving(create_app(gate)) as http:
        yield http, gate


@pytest.mark.parametrize(("extra", "field"), OUT_OF_RANGE)
async def test_out_of_range_fields_are_422_on_every_store_and_change_nothing(
        api: Any, extra: dict[str, Any], field: str) -> None:
    """Each out-of-range field is one 422 naming it, on every store; nothing is taken."""
    http, gate = api
    response = await http.post("/v1/calls", content=raw(request_body(**extra)),
                               headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    document = response.json()
    assert document["error"] == "invalid request"
    assert [d["field"] for d in document["detail"]] == [field]
    assert document["detail"][0]["message"]
    usage = gate.usage()
    assert usage["leases"] == 0 and gate.queue() == []


@pytest.mark.parametrize(("extra", "field"), OUT_OF_RANGE)
async def test_the_hot_route_and_fastapi_give_the_same_422(extra: dict[str, Any],
                                                           field: str) -> None:
    """POST /v1/calls and a FastAPI route reading the same model answer each bound alike."""
    from tests.service.test_api import make_stack
    from tests.service.test_hot_routes import REFERENCE, with_reference_route

    gate = memory_gate(make_stack(STACK))
    async with serving(with_reference_route(create_app(gate))) as http:
        headers = {"content-type": "application/json"}
        ours = await http.post("/v1/calls", content=raw(request_body(**extra)), headers=headers)
        fastapi = await http.post(REFERENCE, content=raw(request_body(**extra)),
                                  headers=headers)
    assert (ours.status_code, ours.json()) == (fastapi.status_code, fastapi.json())


async def test_the_extremes_of_every_bound_are_decided_and_queued_in_order(
        api: Any) -> None:
    """The largest and smallest accepted values are decided on every store, order intact."""
    http, gate = api
    visible = "".join(chr(c) for c in range(0x21, 0x7F))
    longest_id = (visible * 3)[:CALL_ID_MAX_BYTES]
    bodies = [
        request_body(call_id=longest_id, attempt=ATTEMPT_MAX, remote="\u00e9" * 128),
        request_body(call_id="low", priority=PRIORITY_MIN),
        request_body(call_id="high", priority=PRIORITY_MAX),
        request_body(call_id="mid", priority=0, resources={"db": 4}),
    ]
    answers = []
    for body in bodies:
        response = await http.post("/v1/calls", json=body)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    assert answers[0]["decision"] == "admitted" and answers[0]["call_id"] == longest_id
    assert [a["decision"] for a in answers[1:]] == ["queued"] * 3
    assert [e["call_id"] for e in gate.queue()] == ["high", "mid", "low"]
    assert [e["priority"] for e in gate.queue()] == [PRIORITY_MAX, 0, PRIORITY_MIN]
    released = await http.delete(f"/v1/calls/{quote(longest_id, safe='')}")
    assert released.json() == {"released": True, "cancelled": False}


def test_a_call_out_of_the_stores_range_is_refused_before_any_store() -> None:
    """Call() itself refuses a priority or attempt no store could keep exactly."""
    for priority in (PRIORITY_MAX + 1, PRIORITY_MIN - 1, 2**70):
        with pytest.raises(ValueError, match="priority must be in"):
            Call("c", "inbound", N1, priority=priority)
    with pytest.raises(ValueError, match="attempt must be in"):
        Call("c", "outbound", N1, attempt=ATTEMPT_MAX + 1)
    assert Call("c", "inbound", N1, priority=PRIORITY_MIN).priority == PRIORITY_MIN


ROUTES = [
    ("POST", "/v1/calls"),
    ("POST", "/v1/calls/c1/renew"),
    ("DELETE", "/v1/calls/c1"),
    ("POST", "/v1/providers/llm/keys/k/errors"),
    ("POST", "/v1/admin/reload"),
    ("GET", "/v1/usage"),
    ("POST", "/twilio/voice"),
    ("POST", "/twilio/status"),
    ("POST", "/no/such/route"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_64_kib_is_413_on_every_route(
        method: str, path: str, chunked: bool) -> None:
    """Past 64 KiB, declared or streamed, every route answers the same 413 and takes nothing."""
    from tests.service.test_api import make_stack

    gate = memory_gate(make_stack(STACK))
    filler = request_body(call_id="big", remote="x" * 10)
    text = json.dumps(filler)
    data = text[:-1].encode() + b" " * (MAX_BODY_BYTES + 1 - len(text)) + b"}"
    assert len(data) == MAX_BODY_BYTES + 1

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 4096):
            yield data[start:start + 4096]

    async with serving(create_app(gate)) as http:
        response = await http.request(method, path, content=pieces() if chunked else data,
                                      headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"error": "request too large", "limit_bytes": 65536}
    assert gate.usage()["leases"] == 0


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_of_exactly_64_kib_is_read(chunked: bool) -> None:
    """The limit is inclusive: a 65,536-byte body is decided like any other."""
    from tests.service.test_api import make_stack

    gate = memory_gate(make_stack(STACK))
    text = json.dumps(request_body(call_id="edge"))
    data = text[:-1].encode() + b" " * (MAX_BODY_BYTES - len(text)) + b"}"
    assert len(data) == MAX_BODY_BYTES

    async def pieces() -> AsyncIterator[bytes]:
        yield data[:1000]
        yield data[1000:]

    async with serving(create_app(gate)) as http:
        response = await http.post("/v1/calls", content=pieces() if chunked else data,
                                   headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["decision"] == "admitted"


async def test_a_refused_long_value_is_echoed_cut_short() -> None:
    """A 60,000-character call id is named in the 422 but not sent back whole."""
    from tests.service.test_api import make_stack

    gate = memory_gate(make_stack(STACK))
    async with serving(create_app(gate)) as http:
        response = await http.post("/v1/calls", json=request_body(call_id="y" * 60_000))
    assert response.status_code == 422
    [detail] = response.json()["detail"]
    assert detail["value"].startswith("y" * 256) and detail["value"].endswith("(60000 characters)")
    assert len(detail["value"]) < 300


@pytest.mark.parametrize("call_id", ["a/b", "a/renew", "x?y#z", "100%", "..", "~!@$"])
async def test_any_visible_ascii_id_can_be_renewed_and_released(call_id: str) -> None:
    """Ids with '/', '?', '#', '%' or dots are renewed and released by their quoted path."""
    from tests.service.test_api import make_stack

    gate = memory_gate(make_stack(STACK))
    path = f"/v1/calls/{quoted_id(call_id)}"  # as GateClient sends it
    async with serving(create_app(gate)) as http:
        admitted = await http.post("/v1/calls", json=request_body(call_id=call_id))
        assert admitted.json()["decision"] == "admitted"
        renewed = await http.post(f"{path}/renew")
        assert renewed.status_code == 200 and renewed.json()["call_id"] == call_id
        released = await http.delete(path)
        assert released.json() == {"released": True, "cancelled": False}
    assert gate.usage()["leases"] == 0
