"""The fast lane for the two hottest routes (acquire and release) of the HTTP API.

FastAPI resolves every endpoint's parameters with its dependency solver; for a call
decision on a memory store that costs more than the decision itself. The routes here
serve their plain requests directly and hand everything else, byte for byte, to
FastAPI's own handler, so validation errors, OpenAPI and docs stay FastAPI's. This leans
on FastAPI internals (``APIRoute.dependant``, ``body_field``, the telemetry and body-limit
hooks); tests/service/test_inline.py pins the behaviour so an upgrade that breaks it fails
loudly. Measured: ``bench/run.py --only http`` went from 0.33-0.61x to 0.64-0.79x of a bare
Starlette app with the same routes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.telemetry import get_telemetry_data
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.types import Message, Receive, Scope, Send

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def inline_route(app: FastAPI, method: str, path: str, **options: Any
            ) -> Callable[[Endpoint], Endpoint]:
    """``@app.post``/``@app.delete`` for a hot route: registers an :class:`InlineRoute`."""
    def register(endpoint: Endpoint) -> Endpoint:
        app.router.add_api_route(path, endpoint, methods=[method],
                                 route_class_override=InlineRoute, **options)
        return endpoint

    return register


class InlineRoute(APIRoute):
    """A route that serves its plain requests without FastAPI's per-request machinery.

    FastAPI resolves an endpoint's parameters with its dependency solver, which costs
    more than the gate's decision does. This route serves the plain case itself: no
    query string, and (when the endpoint takes a body) a JSON object that the body model
    accepts, validated by the same field FastAPI would use. Anything else (a query
    string, another content type, a chunked body, broken JSON, an invalid body, active
    telemetry, a body size limit) goes to FastAPI's own handler, the body replayed, so
    every such answer, 422s included, is FastAPI's. The OpenAPI is built from the
    endpoint's signature like any route's.

    The endpoint may take ``str`` path parameters, query parameters that default to
    None, at most one body model and the :class:`Request`; it returns a Response.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        dependant = self.dependant
        plain = (
            dependant.request_param_name is not None
            and not (dependant.dependencies or dependant.header_params
                     or dependant.cookie_params or self._embed_body_fields
                     or self.max_body_size is not None or len(dependant.body_params) > 1)
            and all(p.field_info.annotation is str for p in dependant.path_params)
            and all(q.default is None for q in dependant.query_params)
        )
        if not plain:
            raise TypeError(f"{path}: an InlineRoute endpoint takes str path parameters, "
                            "query parameters defaulting to None, at most one body model "
                            "and the Request")
        self._full = self.app  # FastAPI's handler, for everything but the plain case
        self._call = endpoint
        self._request_name: str = dependant.request_param_name or ""
        self._path_names = [p.alias for p in dependant.path_params]
        self._defaults = {q.name: None for q in dependant.query_params}
        self._body = (dependant.body_params[0].name, self.body_field) if self.body_field else None
        self.app = self._serve

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["query_string"] or MAX_BODY_SIZE_SCOPE_KEY in scope
                or get_telemetry_data() is not None):
            await self._full(scope, receive, send)
            return
        path_params = scope["path_params"]
        values: dict[str, Any] = {name: path_params[name] for name in self._path_names}
        values.update(self._defaults)
        if self._body is not None:
            message = await receive()
            receive = _replay(message, receive)
            name, field = self._body
            document = _json_body(scope, message)
            errors: list[Any] = []
            if document is not _NOT_JSON:
                values[name], errors = field.validate(document, loc=("body",))
            if document is _NOT_JSON or errors:
                await self._full(scope, receive, send)
                return
        values[self._request_name] = Request(scope, receive, send)
        response = await self._call(**values)
        if not isinstance(response, Response):
            raise TypeError(f"{self.path}: an InlineRoute endpoint returns a Response, "
                            f"not {type(response).__name__}")
        await response(scope, receive, send)


class HotJSONResponse(JSONResponse):
    """JSONResponse's very bytes, from one shared encoder (``json.dumps`` builds one a call)."""

    def render(self, content: Any) -> bytes:
        return _ENCODER.encode(content).encode("utf-8")


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None,
                            separators=(",", ":"))
_NOT_JSON = object()
_JSON_TYPES = (b"application/json", b"application/json; charset=utf-8")


def _json_body(scope: Scope, message: Message) -> Any:
    """The request's JSON when ``message`` holds all of it and says it is JSON, else _NOT_JSON."""
    if message["type"] != "http.request" or message.get("more_body", False):
        return _NOT_JSON
    content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
    body = message.get("body", b"")
    if not body or content_type.lower() not in _JSON_TYPES:
        return _NOT_JSON
    try:
        return json.loads(body.decode())  # what is not UTF-8 is FastAPI's to refuse
    except (ValueError, RecursionError):  # FastAPI's handler will say what is wrong
        return _NOT_JSON


def _replay(message: Message, receive: Receive) -> Receive:
    """``receive`` with ``message`` (already taken from it) handed out again first."""
    pending = [message]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
