"""The error answers the test suite receives (kept by a fixture in tests/conftest.py).

One module, imported by one name, so the fixture that fills the list and the test that
judges it (tests/test_error_answers.py) share it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class ErrorAnswer:
    """One 4xx/5xx a test received from a callgate app, and the app's OpenAPI document."""

    document: dict[str, Any]
    method: str
    raw_path: str
    status: int
    content_type: str
    body: bytes
    test: str


ERROR_ANSWERS: list[ErrorAnswer] = []
JUDGE = "test_error_answers.py"


def record(document: dict[str, Any] | None, response: httpx.Response) -> None:
    """Keep ``response`` when ``document`` is a callgate app's OpenAPI."""
    if document is None or document.get("info", {}).get("title") != "callgate":
        return
    request = response.request
    ERROR_ANSWERS.append(ErrorAnswer(
        document, request.method, request.url.raw_path.decode("ascii").split("?")[0],
        response.status_code, response.headers.get("content-type", ""), response.content,
        os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]))
