"""What the OpenAPI at ``/docs`` says about security and error answers, route by route.

Every route documents the error bodies it really sends; ``tests/test_error_answers.py``
checks every error answer the test suite receives against this document.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from callgate.service.schemas import (
    AcquireInvalidOut,
    ErrorOut,
    InvalidRequestOut,
    InvalidStackOut,
    NotReadyOut,
    StoreDownOut,
    TooLargeOut,
)

# who may do what -------------------------------------------------------------------------
BEARER = "bearer"
SECURED: dict[str, Any] = {"security": [{BEARER: []}]}
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No bearer token, or one no tenant owns."},
    403: {"model": ErrorOut,
          "description": "The token may not do this (another account, or admin only)."},
}


# what each route answers when it cannot decide: the OpenAPI shows these bodies, and
# tests/test_error_answers.py checks every error answer the suite sees against them
def _error(model: Any, description: str) -> dict[str, Any]:
    return {"model": model, "description": description}


_UNREADABLE = _error(ErrorOut, "The body is not UTF-8 JSON (error: bad_request).")
_BAD_FIELD = _error(InvalidRequestOut, "A field is missing, unknown or out of bounds.")
_STORE_DOWN = _error(StoreDownOut, "The store did not answer; retry shortly.")
ROUTE_ERRORS: dict[tuple[str, str], dict[int | str, dict[str, Any]]] = {
    ("POST", "/v1/calls"): {
        400: _UNREADABLE,
        404: _error(ErrorOut, "The number is not in the stack (error: unknown_number)."),
        409: _error(ErrorOut, "The call id was used with another body (error: call_conflict)."),
        422: _error(AcquireInvalidOut,
                    "A bad field, or a provider or resource the stack lacks "
                    "(error: unknown_provider)."),
    },
    ("POST", "/v1/calls/{call_id}/renew"): {422: _BAD_FIELD, 503: _STORE_DOWN},
    ("DELETE", "/v1/calls/{call_id}"): {422: _BAD_FIELD, 503: _STORE_DOWN},
    ("GET", "/v1/usage"): {503: _STORE_DOWN},
    ("GET", "/v1/queue"): {503: _STORE_DOWN},
    ("POST", "/v1/providers/{provider}/keys/{key}/errors"): {
        400: _UNREADABLE, 422: _BAD_FIELD,
        404: _error(ErrorOut, "No such provider or key (error: unknown_provider)."),
        503: _STORE_DOWN},
    ("POST", "/v1/admin/reload"): {
        409: _error(ErrorOut, "Started without a stack file (error: no_config)."),
        422: _error(InvalidStackOut, "The stack file is invalid; the running stack is kept."),
        503: _STORE_DOWN},
    ("GET", "/readyz"): {503: _error(NotReadyOut, "The store cannot be reached.")},
    ("GET", "/v1/campaigns/{name}"): {
        404: _error(ErrorOut, "No such campaign for this token (error: unknown_campaign).")},
    ("POST", "/v1/campaigns/{name}/optout"): {
        400: _UNREADABLE, 422: _BAD_FIELD,
        404: _error(ErrorOut, "No such campaign for this token (error: unknown_campaign).")},
}
EVERY_ROUTE_ERRORS: dict[int | str, dict[str, Any]] = {
    413: _error(TooLargeOut, "The body is over 64 KiB; it was not read."),
    500: _error(ErrorOut, "A bug (error: internal); the server log has the details."),
}
WEBHOOK_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "A bad or missing X-Twilio-Signature; nothing was changed.",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
    422: _BAD_FIELD,
}


def route_errors(method: str, path: str, *, secured: bool = True
            ) -> dict[int | str, dict[str, Any]]:
    """The error answers of one route, for its OpenAPI ``responses``."""
    return {**EVERY_ROUTE_ERRORS, **(AUTH_RESPONSES if secured else {}),
            **ROUTE_ERRORS.get((method, path), {})}


def document_bearer(app: FastAPI) -> None:
    """Declare the bearer scheme in the OpenAPI (routes name it in ``openapi_extra``)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            # FastAPI's default 422 schemas: every route documents the 422 it really sends
            schemas = document.get("components", {}).get("schemas", {})
            if "HTTPValidationError" not in json.dumps(document.get("paths", {})):
                schemas.pop("HTTPValidationError", None)
                schemas.pop("ValidationError", None)
            schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes[BEARER] = {"type": "http", "scheme": "bearer",
                               "description": "A token from the stack's [[api.tokens]]; "
                                              "not needed when none are configured."}
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way
