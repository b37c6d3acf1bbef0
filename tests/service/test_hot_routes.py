"""The hot routes (acquire, release): plain Starlette routes that answer as FastAPI would."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from tests.stacks import N1, one_number

from callgate.config import parse_stack
from callgate.service.app import create_app
from callgate.service.openapi_docs import route_errors
from callgate.service.schemas import CallRequest
from callgate.testing import FakeClock, memory_gate, serving

SRC = Path(__file__).parents[2] / "src" / "callgate"
REFERENCE = "/reference/calls"  # a FastAPI route taking the same model, for comparison

pytestmark = pytest.mark.anyio

STACK = one_number(gate='lease_ttl = "30s"\nstore = "memory://"')


def with_reference_route(app: FastAPI) -> FastAPI:
    """``app`` plus ``POST /reference/calls``: FastAPI itself reading a :class:`CallRequest`.

    The route sits behind the same middleware and error handlers, so its refusals are what
    FastAPI's own body reading would answer for ``POST /v1/calls``.
    """
    async def reference(body: CallRequest) -> dict[str, str]:
        return {"call_id": body.call_id}

    # Documented like the hot route: tests/test_error_answers.py judges its answers too.
    app.router.add_api_route(REFERENCE, reference, methods=["POST"],
                             responses=route_errors("POST", "/v1/calls"))
    return app


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    gate = memory_gate(parse_stack(tomllib.loads(STACK)), FakeClock())
    async with serving(with_reference_route(create_app(gate))) as client:
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
    """A JSON body is decided whichever JSON media type names it (FastAPI's rule)."""
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
    """A body that arrives in pieces (chunked) is decided like a whole one."""
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


async def test_query_strings_are_read_as_fastapi_reads_them(http: httpx.AsyncClient) -> None:
    """A query string is ignored on acquire; ``?account=`` scopes a release (last one wins)."""
    first = await http.post("/v1/calls?unused=1", content=body("a"),
                            headers={"content-type": "application/json"})
    assert first.json()["decision"] == "admitted"
    elsewhere = await http.delete("/v1/calls/a?account=other")
    assert elsewhere.json() == {"released": False, "cancelled": False}
    own = await http.delete("/v1/calls/a?account=other&account=acme")
    assert own.json() == {"released": True, "cancelled": False}


async def test_answers_are_the_bytes_jsonresponse_would_send(http: httpx.AsyncClient) -> None:
    """The hot routes' bodies are byte for byte what Starlette's JSONResponse renders."""
    response = await http.post("/v1/calls", content=body("é"),
                               headers={"content-type": "application/json"})
    assert response.content == JSONResponse(response.json()).body
    assert response.headers["content-type"] == "application/json"
    released = await http.delete("/v1/calls/x")
    assert released.content == b'{"released":false,"cancelled":false}'


# Bodies FastAPI refuses, each with a JSON content type unless given: every way a body can
# be wrong before the gate is asked (syntax, encoding, shape, each field's bounds).
REFUSED: list[tuple[bytes, str | None]] = [
    (b"", "application/json"),
    (b"[]", "application/json"),
    (b'"call"', "application/json"),
    (b"{", "application/json"),
    (b'{"call_id": "a",}', "application/json"),
    (b'{"call_id": "\xff"}', "application/json"),
    (b"[" * 5000 + b"]" * 5000, "application/json"),
    (b"{}", "application/json"),
    (b'{"call_id": "a"}', "text/plain"),
    (b"\xff\xfe", "text/plain"),
    (b'{"call_id": "a"}', "application/xml"),
    (body("a", foo=1), "application/json"),
    (body("a", direction="sideways"), "application/json"),
    (body("has space", number="x", priority="3"), "application/json"),
    (body("a", priority=2**70, attempt=0), "application/json"),
    (body("a", ttl_s=-1), "application/json"),
    (body("a", providers="llm", resources={"db": -1}), "application/json"),
    (body("a", remote="\ud800"), "application/json; charset=utf-8"),
    (json.dumps({"call_id": "a", "direction": "inbound", "number": N1,
                 "priority": float("nan")}).encode(), "application/vnd.callgate+json"),
]


@pytest.mark.parametrize(("data", "content_type"), REFUSED)
async def test_a_refused_body_gets_fastapis_very_answer(
        http: httpx.AsyncClient, data: bytes, content_type: str | None) -> None:
    """Status, headers' type and body of every refusal equal a FastAPI route's for the model."""
    headers = {} if content_type is None else {"content-type": content_type}
    ours = await http.post("/v1/calls", content=data, headers=headers)
    fastapi = await http.post(REFERENCE, content=data, headers=headers)
    assert ours.status_code in (400, 422), ours.text
    assert (ours.status_code, ours.headers["content-type"], ours.json()) == (
        fastapi.status_code, fastapi.headers["content-type"], fastapi.json())


@pytest.mark.parametrize(("data", "headers"), [
    (b"null", {"content-type": "application/json"}),
    (b'{"call_id": "a"}', {}),
])
async def test_json_null_and_an_untyped_body_are_refused_as_not_an_object(
        http: httpx.AsyncClient, data: bytes, headers: dict[str, str]) -> None:
    """JSON ``null`` and a body without a content type are refused as not a JSON object.

    That is today's FastAPI's answer (older releases, down to the floor, read ``null`` as
    no body and parsed an untyped body as JSON); these routes give it on every release.
    """
    response = await http.post("/v1/calls", content=data, headers=headers)
    assert response.status_code == 422
    [detail] = response.json()["detail"]
    assert detail["field"] == "body"
    assert detail["message"] == "Input should be a valid dictionary or object to extract " \
                                "fields from"


async def test_wrong_methods_and_paths_are_refused_as_elsewhere(http: httpx.AsyncClient) -> None:
    """PUT /v1/calls and POST /v1/calls/x are 405s, in the shape of every error answer."""
    for method, path in (("PUT", "/v1/calls"), ("POST", "/v1/calls/x"), ("GET", "/v1/calls/x")):
        response = await http.request(method, path)
        assert response.status_code == 405, (method, path)
        assert response.json()["error"] == "method_not_allowed"


def _imports(path: Path) -> list[str]:
    """Every ``module`` and ``module.name`` that ``path`` imports, and attributes it reads."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.Attribute):
            found.append(f"<attribute>.{node.attr}")
    return found


def test_no_module_reads_fastapi_or_starlette_internals() -> None:
    """src/ imports no ``_``-prefixed FastAPI/Starlette name nor their private hooks."""
    private = []
    for path in sorted(SRC.rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] in ("fastapi", "starlette") and any(p.startswith("_") for p in parts):
                private.append(f"{path.name}: {name}")
            if name.startswith(("fastapi.telemetry", "starlette.middleware.body_limit")):
                private.append(f"{path.name}: {name}")
            if name in ("<attribute>.dependant", "<attribute>.body_field"):
                private.append(f"{path.name}: {name}")
    assert private == []


TELEMETRY_PROBE = textwrap.dedent("""
    import asyncio, json, tomllib
    import httpx
    from fastapi import FastAPI
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from callgate.config import parse_stack
    from callgate.service.app import create_app
    from callgate.testing import memory_gate

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    plain = FastAPI()
    plain.get("/healthz")(lambda: {"status": "ok"})
    gate = create_app(memory_gate(parse_stack(tomllib.loads(STACK))))

    async def ask(app):
        spans.clear()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            await http.get("/healthz")
        return len(spans.get_finished_spans())

    print(json.dumps({"plain": asyncio.run(ask(plain)), "callgate": asyncio.run(ask(gate))}))
""")


@pytest.mark.slow
def test_fastapis_per_request_telemetry_is_off() -> None:
    """With an OpenTelemetry tracer configured, FastAPI traces a plain app's request, not ours."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        pytest.skip("this FastAPI release has no per-request telemetry to turn off")
    pytest.importorskip("opentelemetry.sdk", reason="needs opentelemetry-sdk")
    done = subprocess.run([sys.executable, "-c", f"STACK = {STACK!r}\n{TELEMETRY_PROBE}"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["callgate"] == 0, counts
    assert counts["plain"] > 0, counts  # the probe does see FastAPI's spans when they are on
