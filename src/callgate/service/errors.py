"""Every error answer of the API in one shape: ``{"detail", "error"}``, and for a refused
body ``{"detail": [{"field", "value", "message"}], "error": "invalid request"}``, naming
the field, echoing the value (cut short, or its repr when JSON cannot carry it) and saying
what would be accepted. A failing store is a 503 ``store_unavailable``; anything
unexpected a 500 whose details stay in the server log."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException  # Starlette's own refusals too, not only FastAPI's

from callgate.errors import StoreError
from callgate.service.metrics import Metrics

log = logging.getLogger("callgate.service")


class ApiError(Exception):
    """A request the API answers with ``status_code`` and a JSON ``body`` (never a trace)."""

    def __init__(self, status_code: int, body: dict[str, Any],
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(body.get("detail"))
        self.status_code = status_code
        self.body = body
        self.headers = headers


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body, status_code=exc.status_code, headers=exc.headers)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse(invalid_body(field_errors(exc.errors())), status_code=422)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        # FastAPI's and Starlette's own refusals (a body that cannot be read, a path or
        # method no route serves), in the shape of every other error answer.
        assert isinstance(exc, HTTPException)
        error, detail = _HTTP_ERRORS.get(exc.status_code, ("http_error", str(exc.detail)))
        return JSONResponse({"detail": detail, "error": error}, status_code=exc.status_code,
                            headers=exc.headers)

    async def store_down(request: Request, exc: Exception) -> JSONResponse:
        log.error("store unavailable during %s %s: %s", request.method, request.url.path, exc)
        metrics.store_error("request")
        return JSONResponse({"detail": f"{exc}; retry shortly", "reason": "store_unavailable"},
                            status_code=503)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error; the server log has the details",
                             "error": "internal"}, status_code=500)

    handlers: dict[type[Exception], Callable[[Request, Exception], Any]] = {
        ApiError: api_error,
        RequestValidationError: invalid_request,
        HTTPException: http_error,
        StoreError: store_down,
        Exception: unexpected,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)


_HTTP_ERRORS = {
    400: ("bad_request", "the request body could not be read: send UTF-8 JSON"),
    404: ("not_found", "no such route; /docs lists them"),
    405: ("method_not_allowed", "this route does not take that method; /docs lists them"),
}
ECHO_MAX_CHARS = 256  # a refused value longer than this is echoed cut short


def invalid_body(fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {"detail": fields, "error": "invalid request"}


def field_error(field: str, value: Any, message: str) -> dict[str, Any]:
    return {"field": field, "value": jsonable(value), "message": message}


def field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """pydantic's errors as ``{"field": "body.direction", "value": ..., "message": ...}``."""
    fields = []
    for err in errors:
        kind = err.get("type", "")
        name = ".".join(str(part) for part in err.get("loc", ())) or "body"
        value = err.get("input")
        if isinstance(value, str) and len(value) > ECHO_MAX_CHARS:
            value = f"{value[:ECHO_MAX_CHARS]}... ({len(value)} characters)"
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if kind == "missing":
            value, message = None, "field required"
        elif kind == "extra_forbidden":
            message = "unknown field (check the spelling; /docs lists the accepted fields)"
        fields.append(field_error(name, value, message))
    return fields


def jsonable(value: Any) -> Any:
    """``value`` as JSON can carry it in an error body; else its repr (NaN, lone surrogates)."""
    try:
        encoded = jsonable_encoder(value)
        json.dumps(encoded, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return repr(value)
    return encoded
