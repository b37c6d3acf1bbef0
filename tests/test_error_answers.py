"""Every error answer the suite received matches the OpenAPI of the app that sent it.

``tests/conftest.py`` keeps each 4xx/5xx a callgate app gives any test (in process or over
a socket); this module runs last (the conftest orders it so) and checks each one: its
status is documented for its route, and its body validates against the documented schema.
It first asks for one of each error itself, so it judges something even when run alone.
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from tests.error_answers import ERROR_ANSWERS, ErrorAnswer
from tests.stacks import N1, one_number

from callgate.config import parse_stack
from callgate.service.app import create_app
from callgate.testing import memory_gate, serving

pytestmark = pytest.mark.anyio

STACK = one_number(1, gate='poll_timeout = "1h"', extra="""
[providers.llm]
keys = ["k"]
sessions_per_key = 2

[twilio]
auth_token_env = "ERROR_ANSWERS_TWILIO_TOKEN"
stream_url = "wss://agents.test/stream"
""")
JSON = {"content-type": "application/json"}
# Answers no document can describe: a method no route serves on a path.
ROUTER_STATUSES = {404, 405}


def call(call_id: str, **extra: Any) -> dict[str, Any]:
    return {"call_id": call_id, "direction": "inbound", "number": N1, **extra}


async def ask_for_every_error(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """One request for each documented error status; the statuses received."""
    monkeypatch.setenv("ERROR_ANSWERS_TWILIO_TOKEN", "token")
    gate = memory_gate(parse_stack(tomllib.loads(STACK)))
    seen = set()
    async with serving(create_app(gate)) as http:
        answers = [
            await http.post("/v1/calls", content=b'{"call_id": "\xff"}', headers=JSON),  # 400
            await http.post("/v1/calls", json=call("a", number="+14155550199")),  # 404
            await http.post("/v1/calls", json=call("b")),
            await http.post("/v1/calls", json=call("b", remote="+12025550100")),  # 409
            await http.post("/v1/calls", content=b"{" + b" " * 70_000 + b"}",
                            headers=JSON),  # 413
            await http.post("/v1/calls", json=call("c", priority=2**40)),  # 422 field
            await http.post("/v1/calls", json=call("d", providers=["nope"])),  # 422 provider
            await http.post("/v1/calls/zz/renew"),  # 404 renew refusal
            await http.post("/v1/calls/b/renew?ttl_s=-1"),  # 422 query
            await http.post("/v1/providers/nope/keys/k/errors", json={"status": 429}),  # 404
            await http.post("/v1/providers/llm/keys/k/errors", json={"status": 99}),  # 422
            await http.post("/v1/admin/reload"),  # 409 no config
            await http.post("/twilio/voice", content=b"To=%2B14155550100",
                            headers={"content-type": "application/x-www-form-urlencoded"}),
        ]
        seen = {answer.status_code for answer in answers}
    return seen


def _template(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")


def problem_with(answer: ErrorAnswer) -> str | None:
    """Why ``answer`` does not match its document, or None when it does."""
    paths: dict[str, Any] = answer.document["paths"]
    matches = [p for p in paths if _template(p).match(answer.raw_path)]
    if not matches:  # no route: nothing a document could describe (404, or 413 unread)
        return None
    operation = paths[matches[0]].get(answer.method.lower())
    if operation is None:
        return None if answer.status in ROUTER_STATUSES else "method not in the document"
    responses = operation["responses"]
    documented = responses.get(str(answer.status))
    if documented is None:
        return f"status {answer.status} not documented (documented: {sorted(responses)})"
    media_type = answer.content_type.split(";")[0].strip()
    content = documented.get("content", {})
    if media_type not in content:
        return f"media type {media_type!r} not documented (documented: {sorted(content)})"
    schema = content[media_type].get("schema")
    if schema is None or media_type != "application/json":
        return None
    root = {**schema, "components": answer.document.get("components", {})}
    errors = sorted(Draft202012Validator(root).iter_errors(json.loads(answer.body)), key=str)
    return None if not errors else f"body does not match the schema: {errors[0].message}"


async def test_every_error_answer_matches_the_openapi(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each 4xx/5xx any test received is documented for its route, body and all."""
    seen = await ask_for_every_error(monkeypatch)
    assert {400, 403, 404, 409, 413, 422} <= seen
    assert len(ERROR_ANSWERS) >= 12  # its own (one of the 13 requests is admitted)
    problems = []
    for answer in ERROR_ANSWERS:
        why = problem_with(answer)
        if why is not None:
            problems.append(f"{answer.test}: {answer.method} {answer.raw_path} -> "
                            f"{answer.status} {answer.body[:200]!r}: {why}")
    assert not problems, "\n".join(problems)


def test_a_body_unlike_the_document_would_be_caught() -> None:
    """The judge itself: an undocumented status or a wrong body shape is reported."""
    app = create_app(memory_gate(parse_stack(tomllib.loads(STACK.split("[twilio]")[0]))))
    document = app.openapi()

    def answer(status: int, body: object, path: str = "/v1/calls") -> ErrorAnswer:
        return ErrorAnswer(document, "POST", path, status, "application/json",
                           json.dumps(body).encode(), "self-test")

    assert problem_with(answer(409, {"detail": "x", "error": "call_conflict"})) is None
    assert "not documented" in str(problem_with(answer(418, {"detail": "x"})))
    assert "does not match" in str(problem_with(answer(409, {"message": "x"})))
    assert "does not match" in str(problem_with(answer(413, {"error": "too big"})))
    assert problem_with(answer(404, {"detail": "x"}, "/nowhere")) is None
