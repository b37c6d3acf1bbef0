"""The server `callgate serve` runs: httptools and uvloop, and the access log only when asked."""

from __future__ import annotations

import tomllib
from pathlib import Path

import httpx
import pytest
from tests.served import served
from tests.stacks import N1, one_number

from callgate.config import parse_stack
from callgate.service.app import create_app
from callgate.service.server import server_config, server_stack
from callgate.testing import memory_gate

STACK = one_number()


def test_serve_runs_on_httptools_and_uvloop() -> None:
    """uvicorn[standard] is a dependency, and serve names its parser and loop explicitly."""
    assert server_stack() == ("httptools", "uvloop")
    app = create_app(memory_gate(parse_stack(tomllib.loads(STACK))))
    config = server_config(app, host="127.0.0.1", port=8080, log_level="info",
                           json_logs=False)
    assert (config.http, config.loop, config.access_log) == ("httptools", "uvloop", False)
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"


def _traffic(url: str) -> None:
    with httpx.Client(timeout=10.0) as http:
        decided = http.post(f"{url}/v1/calls", json={
            "call_id": "c1", "direction": "inbound", "number": N1})
        assert decided.json()["decision"] == "admitted", decided.text
        assert http.get(f"{url}/healthz?token=s3cret").status_code == 200


@pytest.mark.slow
def test_the_access_log_is_off_by_default_and_on_with_its_flag_tokens_masked(
        tmp_path: Path) -> None:
    """Only decisions are logged by default; CALLGATE_ACCESS_LOG=1 adds uvicorn's, tokens masked."""
    config = tmp_path / "stack.toml"
    config.write_text(STACK, encoding="utf-8")
    quiet, loud = tmp_path / "quiet.log", tmp_path / "loud.log"
    with served(config, tmp_path / "a.db", quiet) as server:
        _traffic(server.url)
        assert server.stop() == 0
    with served(config, tmp_path / "b.db", loud, env={"CALLGATE_ACCESS_LOG": "1"}) as server:
        _traffic(server.url)
        assert server.stop() == 0
    for log in (quiet, loud):
        assert "inbound c1: admitted at number" in log.read_text(encoding="utf-8")
    assert '"GET /healthz' not in quiet.read_text(encoding="utf-8")
    text = loud.read_text(encoding="utf-8")
    assert '"GET /healthz?token=*** HTTP/1.1" 200' in text, text
    assert '"POST /v1/calls HTTP/1.1" 200' in text and "s3cret" not in text
