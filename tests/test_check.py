"""`callgate check` runs every check `serve` runs, prints each problem once; --strict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from callgate.cli import cli

BASE = """
[gate]
store = "memory://"
poll_timeout = "30s"

[trunks.t]
max_concurrent = 10

[trunks.u]
max_concurrent = 10

[plans.basic]
max_concurrent = 10

[accounts.acme]
plan = "basic"

[accounts.globex]
plan = "basic"

[numbers."+14155550100"]
account = "acme"
trunk = "t"
max_concurrent = 2

[numbers."+14155550200"]
account = "globex"
trunk = "u"
max_concurrent = 2
"""
TWILIO = """
[twilio]
auth_token_env = "CHECK_TEST_UNSET_TOKEN"
stream_url = "wss://agents.test/stream"
"""
TOKENS = """
[[api.tokens]]
name = "ops"
admin = true
env = "CHECK_TEST_UNSET_API_TOKEN"
"""

# name -> (stack text, extra flags, a words every run must print once)
BROKEN: dict[str, tuple[str, list[str], str]] = {
    "twilio token variable unset (two accounts share it)": (
        BASE + TWILIO, [], "twilio.auth_token_env = 'CHECK_TEST_UNSET_TOKEN'"),
    "api token variable unset": (
        BASE + TOKENS, [], "api.tokens[0].env = 'CHECK_TEST_UNSET_API_TOKEN'"),
    "no tokens on a public address": (BASE, ["--host", "0.0.0.0"], "--host = '0.0.0.0'"),
    "hold pause past the poll timeout": (
        BASE + TWILIO.replace('auth_token_env = "CHECK_TEST_UNSET_TOKEN"',
                              'validate_signatures = false\nhold_pause = "40s"'),
        [], "twilio.hold_pause = 40.0"),
    "redis sharing by account with a shared pool": (
        BASE.replace('store = "memory://"', 'store = "redis://127.0.0.1:1/0?sharing=account"')
        + '[providers.llm]\nkeys = ["k"]\nsessions_per_key = 4\n', [], "providers.llm"),
    "sqlite file in a missing directory": (
        BASE.replace('store = "memory://"', 'store = "sqlite:///no/such/dir/gate.db"'), [],
        "cannot open the store"),
}


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    import uvicorn

    def no_bind(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("serve must refuse before binding")

    monkeypatch.setattr(uvicorn.Server, "run", no_bind)
    # serve configures the root logger; keep this test process's logging as it is
    monkeypatch.setattr("callgate.service.logs.configure", lambda level, fmt: None)
    return CliRunner(env={"CALLGATE_CONFIG": None, "CALLGATE_STORE": None,
                          "CALLGATE_HOST": None, "CHECK_TEST_UNSET_TOKEN": None,
                          "CHECK_TEST_UNSET_API_TOKEN": None, "COLUMNS": "300"})


def problems(result: Result) -> list[str]:
    """The problem lines of a refused stack, in order."""
    return [line for line in result.stderr.splitlines() if line.startswith("  - ")]


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_refuses_what_serve_refuses_each_problem_once(
        case: str, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """For every stack serve refuses, check exits 2 too, with the same problems, each once."""
    monkeypatch.chdir(tmp_path)
    text, flags, words = BROKEN[case]
    config = tmp_path / "stack.toml"
    config.write_text(text, encoding="utf-8")
    checked = runner.invoke(cli, ["check", "--config", str(config), *flags])
    served = runner.invoke(cli, ["serve", "--config", str(config), *flags])
    assert checked.exit_code == served.exit_code == 2, (checked.output, served.output)
    assert problems(checked) == problems(served)
    assert sum(words in line for line in problems(checked)) == 1, checked.stderr
    assert len(set(problems(checked))) == len(problems(checked))
    assert "Traceback" not in checked.output + served.output


def test_warnings_are_printed_and_strict_makes_them_errors(
        runner: CliRunner, tmp_path: Path) -> None:
    """An open API and unchecked webhook signatures warn (exit 0); --strict exits 2 on them."""
    config = tmp_path / "stack.toml"
    config.write_text(BASE + TWILIO.replace('auth_token_env = "CHECK_TEST_UNSET_TOKEN"',
                                            "validate_signatures = false"), encoding="utf-8")
    lenient = runner.invoke(cli, ["check", "--config", str(config)])
    assert lenient.exit_code == 0, lenient.output
    assert lenient.stderr.count("warning: ") == 2
    assert "api.tokens = []: no tokens" in lenient.stderr
    assert "twilio.validate_signatures = False" in lenient.stderr
    assert "stack OK" in lenient.stdout
    strict = runner.invoke(cli, ["check", "--config", str(config), "--strict"])
    assert strict.exit_code == 2
    assert len(problems(strict)) == 2 and "stack OK" not in strict.stdout
    as_json = runner.invoke(cli, ["check", "--config", str(config), "--json"])
    assert as_json.exit_code == 0 and '"warnings": [' in as_json.stdout


def test_insecure_webhooks_flag_is_checked_as_serve_would(
        runner: CliRunner, tmp_path: Path) -> None:
    """check --insecure-webhooks accepts an unset auth token, as serve does, with a warning."""
    config = tmp_path / "stack.toml"
    config.write_text(BASE + TWILIO, encoding="utf-8")
    assert runner.invoke(cli, ["check", "--config", str(config)]).exit_code == 2
    insecure = runner.invoke(cli, ["check", "--config", str(config), "--insecure-webhooks"])
    assert insecure.exit_code == 0, insecure.output
    assert "--insecure-webhooks = True: Twilio webhook signatures are NOT validated" in (
        insecure.stderr)


def test_a_clean_stack_with_tokens_passes_strict(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stack with tokens set and nothing to warn about passes check --strict."""
    config = tmp_path / "stack.toml"
    config.write_text(BASE + TOKENS, encoding="utf-8")
    result = runner.invoke(cli, ["check", "--config", str(config), "--strict"],
                           env={"CHECK_TEST_UNSET_API_TOKEN": "s3cret-token-value"})
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
