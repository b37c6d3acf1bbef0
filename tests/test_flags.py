"""Numeric flags are finite on every command; durations share one parser with stack files."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from callgate.cli import cli
from callgate.config import parse_stack
from callgate.durations import parse_duration
from callgate.flags import FiniteFloatRange, duration_flag

EXAMPLE = Path(__file__).parent.parent / "examples" / "stack.toml"


def numeric_flags() -> list[tuple[str, str]]:
    """(command, flag) for every float-valued option of every command."""
    found = []
    for name, command in sorted(cli.commands.items()):
        for param in command.params:
            if isinstance(param, click.Option) and isinstance(param.type, click.FloatRange | type(
                    click.FLOAT)):
                found.append((name, param.opts[0]))
    return found


def test_every_float_flag_is_finite() -> None:
    """No command declares a float flag that would take NaN or an infinity."""
    flags = numeric_flags()
    assert len(flags) >= 15  # serve, plan, simulate and loadtest all have some
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and isinstance(param.type, click.FloatRange):
                assert isinstance(param.type, FiniteFloatRange), (name, param.opts)


@pytest.mark.parametrize(("command", "flag"), numeric_flags())
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "1e999"])
def test_nan_and_infinities_exit_2_naming_the_flag(command: str, flag: str, value: str) -> None:
    """`--flag nan` (or inf) exits 2 with a message naming the flag, never 'unexpected error'."""
    result = CliRunner(env={"CALLGATE_CONFIG": None, "CALLGATE_TIME_SCALE": None}).invoke(
        cli, [command, flag, value])
    assert result.exit_code == 2, result.output
    assert flag in result.stderr and "not a finite number" in result.stderr
    assert "unexpected error" not in result.stderr


def duration_flags() -> list[tuple[str, str]]:
    return sorted((name, param.opts[0]) for name, command in cli.commands.items()
                  for param in command.params
                  if isinstance(param, click.Option) and param.callback is duration_flag)


@pytest.mark.parametrize(("command", "flag"), duration_flags())
@pytest.mark.parametrize("value", ["nan", "inf", "0", "1m1m", "5 minutes"])
def test_bad_durations_exit_2_naming_the_flag(command: str, flag: str, value: str) -> None:
    """A duration flag refuses NaN, zero and malformed text, naming the flag (exit 2)."""
    result = CliRunner(env={"CALLGATE_CONFIG": None}).invoke(cli, [command, flag, value])
    assert result.exit_code == 2, result.output
    assert flag in result.stderr


@pytest.mark.parametrize(("text", "seconds"), [
    ("180", 180.0), (" 2.5 ", 2.5), ("1m30s", 90.0), ("1h 15m", 4500.0), ("2d12h", 216000.0),
    ("1m500ms", 60.5), ("250ms", 0.25)])
def test_durations_take_bare_seconds_and_compound_forms(text: str, seconds: float) -> None:
    """A bare number is seconds; units add up from the largest down."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30s1m", "1m1m", "1e3", "nan", "-5s", "5 minutes", "m", ""])
def test_durations_refuse_what_they_cannot_read_exactly(text: str) -> None:
    """Units out of order, exponents, NaN and words are refused, saying what is accepted."""
    with pytest.raises(ValueError, match='"1m30s"'):
        parse_duration(text)


def test_stack_files_and_flags_read_durations_alike() -> None:
    """A stack file takes the same forms as a flag: bare seconds and compounds."""
    base = EXAMPLE.read_text(encoding="utf-8")
    stack = parse_stack(tomllib.loads(base.replace('lease_ttl = "30s"', 'lease_ttl = "1m30s"')))
    assert stack.gate.lease_ttl == 90.0
    stack = parse_stack(tomllib.loads(base.replace('lease_ttl = "30s"', 'lease_ttl = "45"')))
    assert stack.gate.lease_ttl == 45.0


def test_plan_reads_a_bare_aht_as_seconds() -> None:
    """`plan --aht 180` plans exactly as `--aht 3m` and `--aht 2m60s` do (README's form)."""
    runner = CliRunner(env={"CALLGATE_CONFIG": None})
    documents = []
    for aht in ("180", "3m", "2m60s"):
        result = runner.invoke(cli, ["plan", "--config", str(EXAMPLE), "--calls-per-day",
                                     "2000", "--aht", aht, "--json"])
        assert result.exit_code == 0, result.output
        documents.append(json.loads(result.stdout))
    assert documents[0] == documents[1] == documents[2]
