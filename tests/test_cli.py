"""The ``callgate`` command line: check, config precedence, errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from callgate import cli as cli_module
from callgate.cli import cli, main

EXAMPLE = Path(__file__).parents[1] / "examples" / "stack.toml"
BAD_KEY = 'numbers."+14155550100".max_concurrent'


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """The example stack with its main line's cap set to -3."""
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "max_concurrent = 10 " in text
    path = tmp_path / "broken.toml"
    path.write_text(text.replace("max_concurrent = 10 ", "max_concurrent = -3 ", 1),
                    encoding="utf-8")
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"CALLGATE_CONFIG": None, "CALLGATE_DEBUG": None, "COLUMNS": "200"})


def test_check_prints_every_layer_and_the_bottleneck(runner: CliRunner) -> None:
    """`check` on the example prints each scope's cap with its note and names the bottleneck."""
    result = runner.invoke(cli, ["check", "--config", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    for text in ("carrier-east", "max 5 calls/s", "+13125550113", "plan growth",
                 "3 keys x 10 = 30, pool cap 25", "40 units / 1 per call"):
        assert text in result.stdout
    assert "Bottleneck: provider openai-realtime, 25 concurrent calls" in result.stdout


def test_check_json_gives_layers_effective_capacity_and_bottleneck(runner: CliRunner) -> None:
    """`check --json` gives every scope, per-layer effective capacity and the lowest one."""
    result = runner.invoke(cli, ["check", "--config", str(EXAMPLE), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    effective = {(row["layer"], row["scope"]): row["cap"] for row in document["effective"]}
    assert effective == {
        ("trunk", "2 trunk(s)"): 63, ("number", "10 number(s)"): 46,
        ("account", "2 account(s)"): 30, ("provider", "openai-realtime"): 25,
        ("provider", "deepgram"): 40, ("resource", "db"): 40,
    }
    assert {k: document["bottleneck"][k] for k in ("layer", "scope", "cap")} == {
        "layer": "provider", "scope": "openai-realtime", "cap": 25}
    layers = {(row["layer"], row["scope"]): row for row in document["layers"]}
    assert len(layers) == 2 + 10 + 2 + 2 + 1
    assert layers[("trunk", "carrier-west")]["note"] == "max 2 calls/s"
    assert layers[("account", "acme-clinics")]["note"] == "plan growth, 5 reserved for inbound"
    assert layers[("number", "+14155550100")]["cap"] == 10
    assert layers[("provider", "deepgram")]["note"] == "1 key x 40 = 40"


def test_check_warns_when_dial_ttl_is_below_the_common_ring_timeout(
    runner: CliRunner, tmp_path: Path
) -> None:
    """`check` warns (exit 0) when [outbound] dial_ttl is under 60 s; the example has none."""
    text = EXAMPLE.read_text(encoding="utf-8")
    assert 'dial_ttl = "90s"' in text
    short = tmp_path / "short.toml"
    short.write_text(text.replace('dial_ttl = "90s"', 'dial_ttl = "40s"', 1), encoding="utf-8")
    result = runner.invoke(cli, ["check", "--config", str(short)])
    assert result.exit_code == 0, result.output
    assert "outbound.dial_ttl = '40s': below the common ring timeout (60s)" in result.output
    clean = runner.invoke(cli, ["check", "--config", str(EXAMPLE), "--json"])
    assert not [w for w in json.loads(clean.stdout)["warnings"] if "dial_ttl" in w]


def test_check_on_a_broken_stack_exits_2_naming_key_and_value(
    runner: CliRunner, broken: Path
) -> None:
    """A broken stack exits 2 and the message names the key path and the bad value."""
    result = runner.invoke(cli, ["check", "--config", str(broken)])
    assert result.exit_code == 2
    assert f"{BAD_KEY} = -3" in result.stderr
    assert "greater than 0" in result.stderr
    assert "Traceback" not in result.output


def test_config_flag_beats_the_environment(runner: CliRunner, broken: Path) -> None:
    """--config wins over CALLGATE_CONFIG; without the flag the variable is used."""
    env = {"CALLGATE_CONFIG": str(broken)}
    assert runner.invoke(cli, ["check", "--config", str(EXAMPLE)], env=env).exit_code == 0
    from_env = runner.invoke(cli, ["check"], env=env)
    assert from_env.exit_code == 2 and BAD_KEY in from_env.stderr
    good_env = runner.invoke(cli, ["check", "--json"], env={"CALLGATE_CONFIG": str(EXAMPLE)})
    assert good_env.exit_code == 0


def test_no_stack_file_and_bad_flags_exit_2_with_a_clear_message(
    runner: CliRunner, tmp_path: Path
) -> None:
    """No stack, a missing file and an unknown flag each exit 2 and say what is wrong."""
    nothing = runner.invoke(cli, ["check"])
    assert nothing.exit_code == 2 and "pass --config PATH or set CALLGATE_CONFIG" in nothing.stderr
    missing = runner.invoke(cli, ["check", "--config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2 and "nope.toml" in missing.stderr
    flag = runner.invoke(cli, ["check", "--jsn"])
    assert flag.exit_code == 2 and "--jsn" in flag.stderr
    port = runner.invoke(cli, ["serve", "--config", str(EXAMPLE), "--port", "0"])
    assert port.exit_code == 2 and "--port" in port.stderr


def test_serve_with_a_store_that_cannot_open_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    """`serve` names the store it could not open, or the bad store URL, and exits 2."""
    unopenable = f"sqlite:///{tmp_path}/no/such/dir/gate.db"
    result = runner.invoke(cli, ["serve", "--config", str(EXAMPLE), "--store", unopenable])
    assert result.exit_code == 2
    assert "cannot open the store" in result.stderr and "no/such/dir" in result.stderr
    wrong = runner.invoke(cli, ["serve", "--config", str(EXAMPLE)],
                          env={"CALLGATE_STORE": "mongodb://localhost"})
    assert wrong.exit_code == 2
    assert "gate.store = 'mongodb://localhost'" in wrong.stderr


def test_main_turns_a_bug_into_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug prints one line and exits 1; --debug or CALLGATE_DEBUG=1 adds the traceback."""
    def explode(stack: object) -> list[object]:
        raise RuntimeError("kaboom")

    monkeypatch.delenv("CALLGATE_DEBUG", raising=False)
    monkeypatch.setattr(cli_module, "layer_capacities", explode)
    args = ["check", "--config", str(EXAMPLE)]
    with pytest.raises(SystemExit) as plain:
        main(args)
    err = capsys.readouterr().err
    assert plain.value.code == 1
    assert "unexpected error: RuntimeError: kaboom" in err and "Traceback" not in err

    with pytest.raises(SystemExit) as flagged:
        main(["--debug", *args])
    assert flagged.value.code == 1 and "Traceback" in capsys.readouterr().err

    monkeypatch.setenv("CALLGATE_DEBUG", "1")
    with pytest.raises(SystemExit):
        main(args)
    assert "Traceback" in capsys.readouterr().err


def test_main_exits_0_on_success_and_2_on_a_broken_stack(
    broken: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """main() exits 0 after a good check and 2, without a trace, after a broken one."""
    with pytest.raises(SystemExit) as good:
        main(["check", "--config", str(EXAMPLE), "--json"])
    assert good.value.code == 0
    assert json.loads(capsys.readouterr().out)["bottleneck"]["cap"] == 25
    with pytest.raises(SystemExit) as bad:
        main(["check", "--config", str(broken)])
    err = capsys.readouterr().err
    assert bad.value.code == 2 and BAD_KEY in err and "Traceback" not in err
