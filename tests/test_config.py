"""The stack file: validated once, errors name the file, the key path and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from callgate.config import load_stack, parse_stack
from callgate.durations import format_duration, parse_duration
from callgate.errors import ConfigError
from callgate.gate import Gate

EXAMPLE = Path(__file__).parent.parent / "examples" / "stack.toml"


def test_example_stack_loads_with_defaults_applied() -> None:
    """The shipped example is valid; number_defaults fill numbers that do not say otherwise."""
    stack = load_stack(EXAMPLE)
    assert len(stack.numbers) == 10 and len(stack.trunks) == 2 and len(stack.plans) == 3
    assert stack.numbers["+14155550100"].max_concurrent == 10
    assert stack.numbers["+14155550101"].max_concurrent == 4
    assert stack.numbers["+14155550101"].windows[0].per == 3600
    assert stack.gate.lease_ttl == 30


def test_store_flag_beats_the_file() -> None:
    """A --store value (flag or environment) replaces the file's [gate] store."""
    assert load_stack(EXAMPLE, store="memory://").gate.store == "memory://"


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("5m", 300), ("1h", 3600), (12, 12),
                                          ("250ms", 0.25), (1.5, 1.5), ("1d", 86400)])
def test_durations_accept_units_and_plain_seconds(text: str | float, seconds: float) -> None:
    """Durations are strings with units or numbers of seconds."""
    assert parse_duration(text) == seconds


def test_durations_format_back_to_their_shortest_spelling() -> None:
    """Window scope names use the shortest exact duration."""
    assert [format_duration(s) for s in (3600, 60, 1, 90, 0.5)] == ["1h", "1m", "1s", "90s",
                                                                    "500ms"]


def broken(tmp_path: Path, old: str, new: str) -> str:
    path = tmp_path / "stack.toml"
    path.write_text(EXAMPLE.read_text().replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_stack(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_bad_duration_names_key_value_and_accepted_forms(tmp_path: Path) -> None:
    """A bad duration names its key path and value and lists what is accepted."""
    message = broken(tmp_path, 'lease_ttl = "30s"', 'lease_ttl = "thirty"')
    assert "gate.lease_ttl = 'thirty'" in message and '"30s"' in message


def test_unknown_key_is_refused_by_name(tmp_path: Path) -> None:
    """A misspelt key is an error naming it, not silently ignored."""
    message = broken(tmp_path, "max_concurrent = 40", "max_concurent = 40")
    assert "trunks.carrier-east.max_concurent" in message and "unknown key" in message


def test_number_must_be_e164(tmp_path: Path) -> None:
    """Numbers are E.164; a local format is refused with an example of the right one."""
    message = broken(tmp_path, '[numbers."+14155550101"]', '[numbers."4155550101"]')
    assert "E.164" in message and "4155550101" in message


def test_dangling_references_are_named(tmp_path: Path) -> None:
    """A number's account or trunk, and an account's plan, must exist."""
    message = broken(tmp_path, 'trunk = "carrier-east"', 'trunk = "carrier-north"')
    assert "carrier-north" in message and "no such trunk" in message
    message = broken(tmp_path, 'plan = "growth"', 'plan = "gold"')
    assert "accounts.acme-clinics.plan = 'gold'" in message


def test_reserved_inbound_must_leave_room_for_outbound() -> None:
    """reserved_inbound at or above the plan cap is refused."""
    raw = {"trunks": {"t": {"max_concurrent": 1}}, "plans": {"p": {"max_concurrent": 2}},
           "accounts": {"a": {"plan": "p", "reserved_inbound": 2}},
           "numbers": {"+15550000001": {"account": "a", "trunk": "t", "max_concurrent": 1}}}
    with pytest.raises(ConfigError, match="reserved_inbound"):
        parse_stack(raw)


def test_toml_syntax_error_is_reported_with_its_line(tmp_path: Path) -> None:
    """A TOML syntax error names the file and the line."""
    message = broken(tmp_path, "[inbound]", "[inbound")
    assert "line" in message


def test_every_cap_of_the_stack_becomes_a_store_limit() -> None:
    """The gate's limits hold each layer's cap, the pool cap and the windows by scope name."""
    limits = Gate.limits_for(load_stack(EXAMPLE))
    assert limits.caps["provider:openai-realtime"] == 25
    assert limits.caps["provider:openai-realtime:key-a"] == 10
    assert limits.caps["account:bright-dental"] == 5
    assert limits.windows["window:number:+14155550101:outbound:1h"] == (30, 3600)
    assert limits.windows["window:trunk:carrier-east:any:1s"] == (5, 1.0)


def test_two_windows_of_one_scope_and_period_are_refused() -> None:
    """Windows sharing scope, direction and period (max_cps included) would share one log."""
    raw = {"trunks": {"t": {"max_concurrent": 1, "max_cps": 5,
                            "windows": [{"limit": 9, "per": "1s"}]}},
           "plans": {"p": {"max_concurrent": 2}}, "accounts": {"a": {"plan": "p"}},
           "numbers": {"+15550000001": {"account": "a", "trunk": "t", "max_concurrent": 1,
                                        "windows": [{"direction": "outbound", "limit": 10,
                                                     "per": "1h"},
                                                    {"direction": "outbound", "limit": 100,
                                                     "per": "60m"}]}}}
    with pytest.raises(ConfigError) as info:
        parse_stack(raw)
    message = str(info.value)
    assert "trunks.t.windows" in message and 'numbers."+15550000001".windows' in message
