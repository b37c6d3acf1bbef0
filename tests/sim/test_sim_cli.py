"""`callgate simulate` (and the flag checks of `loadtest`) as a user runs them."""

from __future__ import annotations

import builtins
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from callgate.sim.commands import loadtest, simulate

ROOT = Path(__file__).resolve().parents[2]
STACK = str(ROOT / "examples" / "stack.toml")
PROFILE = str(ROOT / "examples" / "profile-business-hours.toml")


def run(*args: str, command: Any = simulate) -> Result:
    return CliRunner().invoke(command, list(args), catch_exceptions=False)


def test_simulate_json_document() -> None:
    """--json prints counts, waits, estimates, layers, scopes and perf; a profile runs a day."""
    result = run("--config", STACK, "--profile", PROFILE, "--factor", "0.3", "--aht", "3m",
                 "--outbound-fraction", "0.1", "--seed", "2", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["kind"] == "simulate" and doc["duration_s"] == 86400
    assert doc["counts"]["arrivals"] == doc["counts"]["inbound"] + doc["counts"]["outbound"] > 0
    assert set(doc["waits_s"]) == {"inbound", "queued_inbound", "abandoned", "outbound"}
    assert set(doc["estimates"]) == {"p_rejected", "p_queued", "p_abandoned", "wait_inbound_s",
                                     "wait_queued_inbound_s", "wait_abandoned_s",
                                     "wait_outbound_s"}
    assert {row["layer"] for row in doc["layers"]} >= {"trunk", "number", "account", "provider"}
    assert all(row["peak"] <= row["cap"] for row in doc["scopes"])
    assert doc["perf"]["decisions"] > 0 and "silent_failures" not in doc


def test_simulate_table_names_the_bottleneck() -> None:
    """Without --json the tables end with the bottleneck, named by layer and scope."""
    result = run("--config", STACK, "--rate", "0.5", "--hours", "0.5", "--aht", "3m")
    assert result.exit_code == 0, result.output
    assert "Per layer" in result.output and "Bottleneck: " in result.output


def test_simulate_html_has_the_charts(tmp_path: Path) -> None:
    """--html draws each charted scope against its cap and the queued callers' waits as SVG."""
    page = tmp_path / "sim.html"
    result = run("--config", STACK, "--rate", "0.3", "--hours", "1", "--aht", "3m",
                 "--html", str(page))
    assert result.exit_code == 0, result.output
    text = page.read_text(encoding="utf-8")
    start = text.index("<svg")
    svg = ET.fromstring(text[start:text.index("</svg>", start) + len("</svg>")])
    gids = {el.get("id") or "" for el in svg.iter()}
    assert any(g.startswith("level-") for g in gids) and any(g.startswith("cap-") for g in gids)
    assert 'id="waits"' in text


def test_html_without_matplotlib_says_how_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without matplotlib, --html fails with one line naming the extra to install."""
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = CliRunner().invoke(simulate, ["--config", STACK, "--rate", "0.1", "--hours", "0.1",
                                           "--html", str(tmp_path / "x.html")])
    assert result.exit_code == 1
    assert "pip install 'callgate[plan]'" in result.output


@pytest.mark.parametrize(("args", "needle"), [
    (("--rate", "1", "--profile", PROFILE), "cannot be combined"),
    ((), "no call volume"),
    (("--rate", "1", "--fault", "openai-realtime-key-a"), "--fault"),
    (("--rate", "1", "--fault", "openai-realtime:nokey@1m+1m"), "openai-realtime:key-a"),
    (("--rate", "1", "--numbers", "+19999999999"), "+19999999999"),
    (("--rate", "1", "--aht", "soon"), "--aht"),
    (("--rate", "1", "--hours", "1", "--warmup", "2h"), "--warmup"),
])
def test_simulate_bad_flags_exit_2_naming_the_flag(args: tuple[str, ...], needle: str) -> None:
    """A wrong flag exits 2 with a message naming the flag or value and what is accepted."""
    result = CliRunner().invoke(simulate, ["--config", STACK, *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_simulate_bad_stack_lists_problems(tmp_path: Path) -> None:
    """A stack that does not validate exits 2 with the key path of each problem."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[trunks.t]\nmax_concurrent = -1\n", encoding="utf-8")
    result = CliRunner().invoke(simulate, ["--config", str(bad), "--rate", "1"])
    assert result.exit_code == 2 and "trunks.t.max_concurrent" in result.output


@pytest.mark.parametrize(("args", "needle"), [
    (("--url", "127.0.0.1:8080", "--rate", "1"), "--url"),
    (("--url", "http://127.0.0.1:9", "--peak", "10"), "--aht"),
    (("--url", "http://127.0.0.1:9", "--accounts", "a", "--rate", "1"), "--config"),
])
def test_loadtest_bad_flags_exit_2_before_sending_anything(args: tuple[str, ...],
                                                           needle: str) -> None:
    """A wrong loadtest flag exits 2 naming it, before any request is sent."""
    result = CliRunner().invoke(loadtest, list(args))
    assert result.exit_code == 2, result.output
    assert needle in result.output
