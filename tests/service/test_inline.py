"""The hot routes' fast lane: plain requests served inline, every other one as FastAPI would."""

from __future__ import annotations

import json
import tomllib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from callgate.config import parse_stack
from callgate.service.app import InlineRoute, create_app
from callgate.service.schemas import CallRequest
from callgate.testing import FakeClock, memory_gate, serving

pytestmark = pytest.mark.anyio

N1 = "+14155550100"
STACK = f"""
[gate]
lease_ttl = "30s"
store = "memory://"

[trunks.t1]
max_concurrent = 10

[plans.basic]
max_concurrent = 10

[accounts.acme]
plan = "basic"

[numbers."{N1}"]
account = "acme"
trunk = "t1"
max_concurrent = 5
"""


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    gate = memory_gate(parse_stack(tomllib.loads(STACK)), FakeClock())
    async with serving(create_app(gate)) as client:
        yield client


def body(call_id: str, **extra: Any) -> bytes:
    return json.dumps({"call_id": call_id, "direction": "inbound", "number": N1,
                       **extra}).encode()


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema``, following one ``$ref`` into the document's components."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    found: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return found


async def test_openapi_describes_the_acquire_request_and_response_bodies(
        http: httpx.AsyncClient) -> None:
    """/openapi.json documents POST /v1/calls's JSON body and its 200 and 422 answers."""
    document = (await http.get("/openapi.json")).json()
    acquire = document["paths"]["/v1/calls"]["post"]
    request = acquire["requestBody"]
    assert request["required"] is True
    schema = resolve(document, request["content"]["application/json"]["schema"])
    assert {"call_id", "direction", "number"} <= set(schema["required"])
    assert {"priority", "attempt", "providers", "resources"} <= set(schema["properties"])
    answer = resolve(document, acquire["responses"]["200"]["content"]["application/json"]
                     ["schema"])
    assert set(answer["properties"]) == {"call_id", "decision", "layer", "scope", "reason",
                                         "lease", "queue", "retry_after_s", "message"}
    assert set(answer["properties"]["decision"]["enum"]) == {
        "admitted", "queued", "retry_later", "rejected"}
    assert "422" in acquire["responses"]
    release = document["paths"]["/v1/calls/{call_id}"]["delete"]
    released = resolve(document, release["responses"]["200"]["content"]["application/json"]
                       ["schema"])
    assert set(released["properties"]) == {"released", "cancelled"}
    assert {p["name"] for p in release["parameters"]} == {"call_id", "account"}


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", "Application/JSON",
    "application/vnd.callgate+json",
])
async def test_any_json_content_type_is_decided(http: httpx.AsyncClient,
                                                content_type: str) -> None:
    """A JSON body is decided whichever JSON media type names it (inline or not)."""
    response = await http.post("/v1/calls", content=body("a"),
                               headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    assert response.json()["decision"] == "admitted"


@pytest.mark.parametrize("headers", [{}, {"content-type": "text/plain"}])
async def test_a_body_not_declared_json_is_a_422_naming_the_body(
        http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """A body without a JSON content type is refused as FastAPI refuses it: 422 on ``body``."""
    response = await http.post("/v1/calls", content=body("a"), headers=headers)
    assert response.status_code == 422
    assert [d["field"] for d in response.json()["detail"]] == ["body"]


async def test_a_body_in_several_chunks_is_decided(http: httpx.AsyncClient) -> None:
    """A body that arrives in pieces (replayed to FastAPI's reader) is decided like a whole one."""
    data = body("a")

    async def pieces() -> AsyncIterator[bytes]:
        yield data[:7]
        yield data[7:]

    response = await http.post("/v1/calls", content=pieces(),
                               headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["call_id"] == "a"


async def test_a_body_that_is_not_utf8_is_a_400(http: httpx.AsyncClient) -> None:
    """Bytes that are not UTF-8 are a 400 saying to send UTF-8 JSON, with no trace."""
    response = await http.post("/v1/calls", content=b'{"call_id": "\xff"}',
                               headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"detail": "the request body could not be read: send UTF-8 JSON",
                               "error": "bad_request"}


async def test_query_strings_take_the_full_path_and_still_work(
        http: httpx.AsyncClient) -> None:
    """A query string (ignored on acquire, ``account`` on release) is honoured as before."""
    first = await http.post("/v1/calls?unused=1", content=body("a"),
                            headers={"content-type": "application/json"})
    assert first.json()["decision"] == "admitted"
    elsewhere = await http.delete("/v1/calls/a?account=other")
    assert elsewhere.json() == {"released": False, "cancelled": False}
    own = await http.delete("/v1/calls/a?account=acme")
    assert own.json() == {"released": True, "cancelled": False}


async def test_answers_are_the_bytes_jsonresponse_would_send(http: httpx.AsyncClient) -> None:
    """The hot routes' bodies are byte for byte what Starlette's JSONResponse renders."""
    response = await http.post("/v1/calls", content=body("é"),
                               headers={"content-type": "application/json"})
    assert response.content == JSONResponse(response.json()).body
    assert response.headers["content-type"] == "application/json"
    released = await http.delete("/v1/calls/x")
    assert released.content == b'{"released":false,"cancelled":false}'


def test_an_endpoint_the_fast_lane_cannot_serve_is_refused_at_startup() -> None:
    """A route whose parameters need FastAPI's solver (an int path, a required query) is refused."""
    async def by_number(call_id: int, request: Request) -> Response:
        return Response()

    async def needs_query(request: Request, account: str) -> Response:
        return Response()

    async def no_request(body: CallRequest) -> Response:
        return Response()

    for endpoint in (by_number, needs_query, no_request):
        app = FastAPI()
        with pytest.raises(TypeError, match="InlineRoute endpoint takes"):
            app.router.add_api_route("/x/{call_id}", endpoint, methods=["POST"],
                                     route_class_override=InlineRoute)


async def test_an_endpoint_returning_a_model_is_a_bug_said_plainly() -> None:
    """An inline endpoint must return a Response; anything else raises a TypeError naming it."""
    async def endpoint(request: Request) -> Any:
        return {"ok": True}

    app = FastAPI()
    app.router.add_api_route("/x", endpoint, methods=["GET"], route_class_override=InlineRoute)
    async with serving(app) as client:
        with pytest.raises(TypeError, match="returns a Response, not dict"):
            await client.get("/x")
