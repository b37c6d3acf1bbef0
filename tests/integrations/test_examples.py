"""The shipped adapter examples load against the real livekit-agents and pipecat-ai."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_livekit_example_wires_request_entrypoint_and_load() -> None:
    """examples/livekit_agent.py builds a gated entrypoint from the real LiveKit imports."""
    module = load("livekit_agent")
    assert callable(module.entrypoint) and module.entrypoint.__name__ == "entrypoint"
    assert callable(module.gated.request_fnc)


@pytest.mark.parametrize("path", ["/media"])
def test_the_pipecat_example_serves_a_media_websocket(path: str) -> None:
    """examples/pipecat_bot.py serves the media stream route on FastAPI."""
    module = load("pipecat_bot")
    assert path in {route.path for route in module.app.routes}  # type: ignore[attr-defined]
