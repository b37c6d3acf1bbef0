"""Stack errors that never mislead: each names the right key, the value and what is accepted."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.stacks import one_number

from callgate.cli import cli
from callgate.config import load_stack, parse_stack
from callgate.errors import ConfigError

BASE = one_number(2)


def problems(text: str) -> list[str]:
    """Every problem line of a stack that must be refused."""
    with pytest.raises(ConfigError) as info:
        parse_stack(tomllib.loads(text))
    return [str(issue) for issue in info.value.issues]


def test_per_call_above_capacity_is_refused_naming_both() -> None:
    """A resource no call could ever get (per_call > capacity) is refused, not '0 calls'."""
    [problem] = problems(BASE + "[resources.db]\ncapacity = 2\nper_call = 3\n")
    assert problem.startswith("resources.db.per_call = 3: must be at most the capacity (2)")
    parse_stack(tomllib.loads(BASE + "[resources.db]\ncapacity = 3\nper_call = 3\n"))


@pytest.mark.parametrize(("old", "new", "path"), [
    ("max_concurrent = 10\n\n[plans", "max_concurrent = true\n\n[plans", "trunks.t.max_concurrent"),
    ("max_concurrent = 10\n\n[plans", 'max_concurrent = "2"\n\n[plans', "trunks.t.max_concurrent"),
    ("max_concurrent = 2\n", "max_concurrent = 2.0\n", 'numbers."+14155550100".max_concurrent'),
    ("max_concurrent = 2\n", "max_concurrent = 2\nwindows = [{limit = true, per = \"1m\"}]\n",
     'numbers."+14155550100".windows[0].limit'),
    ('plan = "basic"\n', 'plan = "basic"\nreserved_inbound = "1"\n',
     "accounts.acme.reserved_inbound"),
    ('max_concurrent = 10\n\n[accounts', 'max_concurrent = 10\nprice = inf\n\n[accounts',
     "plans.basic.price"),
    ('max_concurrent = 10\n\n[accounts', 'max_concurrent = 10\nprice = nan\n\n[accounts',
     "plans.basic.price"),
    ('max_concurrent = 10\n\n[accounts', 'max_concurrent = 10\nprice = true\n\n[accounts',
     "plans.basic.price"),
])
def test_booleans_strings_and_non_finite_numbers_are_not_caps(old: str, new: str,
                                                               path: str) -> None:
    """`true`, "2", 2.0 and inf/nan are refused where a count or a price belongs."""
    assert old in BASE
    found = problems(BASE.replace(old, new, 1))
    assert [p.split(" = ")[0] for p in found] == [path]


def test_a_flag_takes_only_a_boolean() -> None:
    """`required = "yes"` is refused rather than read as true."""
    text = BASE + '[providers.llm]\nkeys = ["k"]\nsessions_per_key = 1\nrequired = "no"\n'
    assert [p.split(" = ")[0] for p in problems(text)] == ["providers.llm.required"]


def test_a_bad_sha256_is_not_reported_as_a_bad_number() -> None:
    """A token hash that is not 64 hex characters says so, and nothing about E.164."""
    text = BASE + '[[api.tokens]]\nname = "ops"\nadmin = true\nsha256 = "ABC"\n'
    [problem] = problems(text)
    assert problem.startswith("api.tokens[0].sha256 = 'ABC': expected the token's SHA-256")
    assert "E.164" not in problem


def test_a_bad_number_still_says_e164() -> None:
    """A number key that is not E.164 says what E.164 is."""
    found = problems(BASE.replace('"+14155550100"', '"4155550100"'))
    assert any("numbers must be E.164" in p for p in found)


def test_a_typo_in_number_defaults_is_reported_there_once() -> None:
    """An unknown key in [number_defaults] is one problem under number_defaults, not per number."""
    text = BASE + '[numbers."+14155550101"]\naccount = "acme"\ntrunk = "t"\n' + (
        "\n[number_defaults]\nmax_concurent = 4\nmax_concurrent = 3\n")
    assert problems(text) == [
        "number_defaults.max_concurent = 4: unknown key (check the spelling; see the stack "
        "reference in the README)"]


def test_a_bad_value_in_number_defaults_is_reported_there_once() -> None:
    """A bad value in [number_defaults] is named under number_defaults; numbers stay quiet."""
    text = BASE + '[numbers."+14155550101"]\naccount = "acme"\ntrunk = "t"\nmax_concurrent = 1\n'
    text += '\n[number_defaults]\nwindows = "often"\n'
    found = problems(text)
    assert [p.split(" = ")[0] for p in found] == ["number_defaults.windows"]


def test_a_missing_key_shows_no_value_rather_than_the_whole_table() -> None:
    """A required key that is missing is said to be missing; its parent is not dumped."""
    [problem] = problems(BASE.replace('trunk = "t"\n', ""))
    assert problem == 'numbers."+14155550100".trunk = None: required key is missing'


@pytest.mark.parametrize(("content", "words"), [
    (b'[gate]\nstore = "memory://\xff"\n', "not UTF-8 text (byte 0xff on line 2)"),
    (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
])
def test_unreadable_files_get_the_normal_error_naming_the_file(
        tmp_path: Path, content: bytes, words: str) -> None:
    """A non-UTF-8 or absurdly nested file is a stack error naming it (exit 2, not 1)."""
    path = tmp_path / "stack.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_stack(path)
    assert str(path) in str(info.value) and words in str(info.value)
    result = CliRunner().invoke(cli, ["check", "--config", str(path)])
    assert result.exit_code == 2 and words in result.stderr


def test_a_deeply_nested_value_is_shown_cut_short(tmp_path: Path) -> None:
    """A long or nested bad value is shown cut short, so the problem stays one line."""
    path = tmp_path / "stack.toml"
    path.write_text(BASE + "[gate]\nx = " + "[" * 300 + "]" * 300 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_stack(path)
    [problem] = [str(i) for i in info.value.issues]
    assert problem.startswith("gate.x = [[[") and "(600 characters): unknown key" in problem
