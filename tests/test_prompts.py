"""What callers hear: resolved number -> account -> stack, hold music refused when unsafe."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from callgate.cli import cli
from callgate.config import Stack, parse_stack
from callgate.errors import ConfigError
from callgate.prompts import Prompts, prompts_for

EXAMPLE = Path(__file__).parents[1] / "examples" / "stack.toml"

BASE = """
[gate]
poll_timeout = "30s"
store = "memory://"

[trunks.t]
max_concurrent = 10

[plans.basic]
max_concurrent = 10

[accounts.acme]
plan = "basic"
hold_message = "Acme: hold."
voice = "Polly.Joanna"
hold_music_url = "https://acme.test/loop.mp3"
hold_music_loop = "12s"

[accounts.plain]
plan = "basic"

[numbers."+14155550100"]
account = "acme"
trunk = "t"
max_concurrent = 1
overflow_message = "Line one is full."
language = "en-GB"

[numbers."+14155550101"]
account = "acme"
trunk = "t"
max_concurrent = 1
hold_music_url = ""

[numbers."+14155550102"]
account = "plain"
trunk = "t"
max_concurrent = 1

[inbound]
hold_message = "Please hold."
overflow_message = "We are full."

[twilio]
voice = "alice"
hold_music_url = "https://stack.test/loop.mp3"
hold_music_loop = "15s"
"""


def stack_of(text: str = BASE) -> Stack:
    return parse_stack(tomllib.loads(text))


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        stack_of(text)
    return str(caught.value)


def test_each_prompt_is_the_numbers_else_the_accounts_else_the_stacks() -> None:
    """Words, voice, language and music resolve number -> account -> [inbound]/[twilio]."""
    stack = stack_of()
    assert prompts_for(stack, "+14155550100") == Prompts(
        hold_message="Acme: hold.", overflow_message="Line one is full.",
        voice="Polly.Joanna", language="en-GB",
        hold_music_url="https://acme.test/loop.mp3", hold_music_loop_s=12.0)
    assert prompts_for(stack, "+14155550102") == Prompts(
        hold_message="Please hold.", overflow_message="We are full.", voice="alice",
        language=None, hold_music_url="https://stack.test/loop.mp3", hold_music_loop_s=15.0)


def test_an_empty_music_url_turns_the_music_off_for_that_number() -> None:
    """hold_music_url = "" on a number means a pause, whatever its account or the stack play."""
    prompts = prompts_for(stack_of(), "+14155550101")
    assert (prompts.hold_music_url, prompts.hold_music_loop_s) == (None, None)
    assert prompts.hold_message == "Acme: hold."


def test_a_number_the_stack_lacks_gets_the_stacks_prompts() -> None:
    """An unknown number (a webhook for a number not in the stack) hears the stack's defaults."""
    prompts = prompts_for(stack_of(), "+19995550000")
    assert (prompts.hold_message, prompts.voice) == ("Please hold.", "alice")


@pytest.mark.parametrize(("old", "new", "key"), [
    ('hold_music_loop = "15s"', 'hold_music_loop = "16s"', "twilio.hold_music_loop = 16.0"),
    ('hold_music_loop = "12s"', 'hold_music_loop = "1m"', "accounts.acme.hold_music_loop = 60.0"),
    ('language = "en-GB"', 'hold_music_url = "https://n.test/a.mp3"\nhold_music_loop = "20s"',
     'numbers."+14155550100".hold_music_loop = 20.0'),
])
def test_a_music_loop_longer_than_half_the_poll_timeout_is_refused(
    old: str, new: str, key: str
) -> None:
    """A clip longer than poll_timeout / 2 could drop a held caller: refused naming the key."""
    message = refused(BASE.replace(old, new))
    assert key in message and "at most gate.poll_timeout / 2 (15 s)" in message


def test_music_without_its_length_or_a_length_without_music_is_refused() -> None:
    """hold_music_url needs hold_music_loop beside it, and hold_music_loop needs a URL."""
    message = refused(BASE.replace('hold_music_loop = "15s"\n', ""))
    assert "twilio.hold_music_loop = None: required with hold_music_url" in message
    message = refused(BASE.replace('hold_music_url = ""\n', 'hold_music_loop = "5s"\n'))
    assert 'numbers."+14155550101".hold_music_loop = 5.0' in message
    assert "set hold_music_url beside it" in message


def test_check_refuses_a_music_loop_longer_than_half_the_poll_timeout(tmp_path: Path) -> None:
    """`callgate check` exits 2 naming hold_music_loop, its value and the bound."""
    text = EXAMPLE.read_text(encoding="utf-8") + (
        '\n[twilio]\nhold_music_url = "https://cdn.test/loop.mp3"\nhold_music_loop = "20s"\n'
        'stream_url = "wss://agent.test/stream"\nauth_token_env = "PROMPTS_TWILIO_TOKEN"\n')
    path = tmp_path / "stack.toml"
    path.write_text(text, encoding="utf-8")
    runner = CliRunner(env={"CALLGATE_CONFIG": None, "CALLGATE_DEBUG": None, "COLUMNS": "200",
                            "PROMPTS_TWILIO_TOKEN": "a-token"})
    result = runner.invoke(cli, ["check", "--config", str(path)])
    assert result.exit_code == 2
    assert "twilio.hold_music_loop = 20.0: at most gate.poll_timeout / 2 (15 s)" in result.stderr
    assert "Traceback" not in result.output
    path.write_text(text.replace('"20s"', '"15s"'), encoding="utf-8")
    assert runner.invoke(cli, ["check", "--config", str(path)]).exit_code == 0


def test_check_warns_about_a_hold_message_too_long_to_say_between_polls(tmp_path: Path) -> None:
    """A hold message of ~27 s of speech (poll_timeout 30 s) is a warning, exit 0, naming it."""
    text = EXAMPLE.read_text(encoding="utf-8")
    long_words = " ".join(["please"] * 50)  # + the example's 17 words: 27 s
    assert text.count('\nhold_message = "') == 1  # [inbound]'s
    path = tmp_path / "stack.toml"
    path.write_text(text.replace('\nhold_message = "', f'\nhold_message = "{long_words} '),
                    encoding="utf-8")
    runner = CliRunner(env={"CALLGATE_CONFIG": None, "CALLGATE_DEBUG": None, "COLUMNS": "200"})
    result = runner.invoke(cli, ["check", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    [warning] = [w for w in json.loads(result.stdout)["warnings"] if "hold_message" in w]
    assert warning.startswith("inbound.hold_message = 'please please")
    assert "takes about 27s to say" in warning
    assert "gate.poll_timeout / 2 (15s)" in warning
