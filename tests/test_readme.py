"""The README's code does what the README says it does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.served import free_port

README = Path(__file__).parents[1] / "README.md"


def client_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- client-snippet:[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert found, "the README lost its marked client snippet"
    return found.group(1)


@pytest.mark.anyio
async def test_the_client_snippet_tells_the_caller_when_the_gate_is_not_running() -> None:
    """Against a gate that is not running, the snippet ends in its except CallNotAdmitted."""
    code = client_snippet()
    assert "http://127.0.0.1:8080" in code
    said: list[str | None] = []
    agents: list[object] = []

    async def run_agent(keys: object) -> None:
        agents.append(keys)

    async def say(message: str | None) -> None:
        said.append(message)

    namespace: dict[str, object] = {"run_agent": run_agent, "say": say}
    exec(code.replace("http://127.0.0.1:8080", f"http://127.0.0.1:{free_port()}"), namespace)
    answer = namespace["answer"]
    await answer("CA1", "+14155550100", "+12125550199")  # type: ignore[operator]
    assert agents == []
    assert said == ["We are receiving more calls than we can take right now. "
                    "Please call again shortly."]
