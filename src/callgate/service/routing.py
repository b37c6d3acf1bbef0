"""The two hottest routes (acquire and release) as plain Starlette routes, on public APIs.

FastAPI resolves every endpoint's parameters with its dependency solver, and for a call
decision on a memory store that costs more than the decision itself. So ``POST /v1/calls``
and ``DELETE /v1/calls/{call_id}`` are Starlette :class:`~starlette.routing.Route`\\ s:
the endpoint takes the :class:`Request`, reads the body with :func:`call_request` (one
pydantic ``TypeAdapter`` of :class:`CallRequest`, the model ``/docs`` shows) and returns a
JSON response. Everything else in the API stays FastAPI.

A body is refused exactly as FastAPI refuses one, by raising what FastAPI raises (its
public :class:`RequestValidationError`, Starlette's :class:`HTTPException`), so the app's
one handler of each shapes the answer: the 422 bodies are the same bytes whichever route
refused (``tests/service/test_hot_routes.py`` compares them with a FastAPI route's).

Starlette routes are not in FastAPI's OpenAPI: :func:`document` adds their operations from
documentation-only :class:`APIRoute`\\ s, built from a signature that names the body model,
the parameters and the response model, and never mounted. Only public names are used
here (no ``_``-prefixed attribute, no ``dependant``), so the service imports and behaves
the same at every FastAPI version from the declared floor up.
"""

from __future__ import annotations

import email.message
import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from callgate.service.schemas import CallRequest

Endpoint = Callable[[Request], Awaitable[Response]]

# The adapter FastAPI would build for a ``body: CallRequest`` parameter, built once.
CALL_REQUEST: TypeAdapter[CallRequest] = TypeAdapter(CallRequest)
UNREADABLE = "There was an error parsing the body"  # FastAPI's words; the app's handler rewords


async def call_request(request: Request) -> CallRequest:
    """The request's body as a :class:`CallRequest`, or FastAPI's very refusal.

    As FastAPI reads a body: no body is a ``missing`` error; a body is parsed as JSON only
    when its content type is ``application/json`` or ``application/*+json`` (otherwise the
    raw bytes are validated, and refused); broken JSON is a ``json_invalid`` error at its
    position; a body that cannot be decoded at all is a 400. Errors are located under
    ``body`` and raised as :class:`RequestValidationError` (answered 422 by the app).
    """
    try:
        raw = await request.body()
    except ClientDisconnect:
        raise HTTPException(400, UNREADABLE) from None
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",),
                                       "msg": "Field required", "input": None}])
    document: Any = raw
    if _is_json(request.headers.get("content-type")):
        try:
            document = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestValidationError([{
                "type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
                "input": {}, "ctx": {"error": exc.msg}}]) from None
        except (ValueError, RecursionError):  # not UTF-8, or nested past Python's stack
            raise HTTPException(400, UNREADABLE) from None
    try:
        return CALL_REQUEST.validate_python(document, from_attributes=True)
    except ValidationError as exc:
        raise RequestValidationError([
            {**error, "loc": ("body", *error["loc"])}
            for error in exc.errors(include_url=False)]) from None


@lru_cache(maxsize=64)
def _is_json(content_type: str | None) -> bool:
    """FastAPI's test of a JSON body: ``application/json`` or ``application/*+json``."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def hot_route(path: str, method: str, endpoint: Endpoint) -> Route:
    """A Starlette route serving ``method path`` with ``endpoint(request) -> Response``."""
    return Route(path, endpoint, methods=[method], include_in_schema=False)


def doc_route(path: str, method: str, signature: Callable[..., Any], *,
              described_by: Endpoint, **options: Any) -> APIRoute:
    """An operation for the OpenAPI only: ``signature`` stands for the hot route's inputs.

    ``signature`` declares what the endpoint ``described_by`` reads by hand (its body model,
    path and query parameters) and its return annotation the response model; the name,
    summary and description are the served endpoint's own, so the document reads as if
    FastAPI served the route. The route is never mounted: it cannot serve a request.
    """
    return APIRoute(path, signature, methods=[method], name=described_by.__name__,
                    description=inspect.cleandoc(described_by.__doc__ or ""), **options)


def document(app: FastAPI, operations: Sequence[APIRoute]) -> None:
    """Build ``app``'s OpenAPI from its FastAPI routes and ``operations``, in that document.

    Sets ``app.openapi`` (FastAPI's documented way to shape the document) to
    ``fastapi.openapi.utils.get_openapi`` over ``operations`` first, then the app's routes;
    the result is cached on ``app.openapi_schema`` as FastAPI caches its own.
    """
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(
                title=app.title, version=app.version, openapi_version=app.openapi_version,
                summary=app.summary, description=app.description,
                terms_of_service=app.terms_of_service, contact=app.contact,
                license_info=app.license_info, routes=[*operations, *app.routes],
                webhooks=app.webhooks.routes, tags=app.openapi_tags, servers=app.servers,
                separate_input_output_schemas=app.separate_input_output_schemas)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way


class HotJSONResponse(JSONResponse):
    """JSONResponse's very bytes, from one shared encoder (``json.dumps`` builds one a call)."""

    def render(self, content: Any) -> bytes:
        return _ENCODER.encode(content).encode("utf-8")


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None,
                            separators=(",", ":"))
