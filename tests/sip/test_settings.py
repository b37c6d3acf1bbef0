"""The [sip] table, sip_forward, and `callgate sip`'s own checks before it listens."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.conftest import stack_from

from callgate.cli import cli
from callgate.config import SipCodes, load_stack
from callgate.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "examples" / "stack.toml"
MINIMAL = """
[trunks.main]
max_concurrent = 5
[plans.basic]
max_concurrent = 5
[accounts.acme]
plan = "basic"
[numbers."+14155550100"]
account = "acme"
trunk = "main"
max_concurrent = 2
"""


def test_sip_defaults() -> None:
    """Without [sip]: no listen or forward, forward_timeout 32 s, RFC 3261 codes."""
    sip = stack_from(MINIMAL).sip
    assert (sip.listen, sip.forward, sip.forward_timeout) == (None, None, 32.0)
    assert sip.session_expires == 1800.0
    assert sip.codes == SipCodes() and sip.codes.trunk == 503 and sip.codes.number == 486


def test_sip_table_is_read() -> None:
    """[sip] listen/forward/forward_timeout and [sip.codes] are read and validated."""
    stack = stack_from(MINIMAL + """
[sip]
listen = "0.0.0.0:5060"
forward = "sip:agents@10.0.0.5:5070"
forward_timeout = "10s"
[sip.codes]
trunk = 480
""")
    assert stack.sip.forward == "sip:agents@10.0.0.5:5070"
    assert stack.sip.forward_timeout == 10.0 and stack.sip.codes.trunk == 480


@pytest.mark.parametrize(("snippet", "where"), [
    ('[sip]\nforward = "http://agents"', "sip.forward"),
    ("[sip.codes]\ntrunk = 200", "sip.codes.trunk"),
    ("[sip]\nforward_timeout = \"0s\"", "sip.forward_timeout"),
])
def test_bad_sip_settings_name_the_key(snippet: str, where: str) -> None:
    """A bad [sip] value is a ConfigError naming its key."""
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        stack_from(MINIMAL + snippet)


def test_session_expires_below_the_rfc_minimum_is_refused() -> None:
    """session_expires under 90 s is a ConfigError naming the key, value and the minimum."""
    with pytest.raises(ConfigError, match=r"sip\.session_expires.*60 s.*minimum of 90 s"):
        stack_from(MINIMAL + '[sip]\nsession_expires = "60s"')
    assert stack_from(MINIMAL + '[sip]\nsession_expires = "90s"').sip.session_expires == 90


def test_bad_sip_forward_on_a_number_names_the_number(tmp_path: Path) -> None:
    """sip_forward must be a SIP URI; the error names the number and what is accepted."""
    path = tmp_path / "stack.toml"
    path.write_text(MINIMAL + 'sip_forward = "agent.example.com"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r'numbers\."\+14155550100"\.sip_forward.*SIP URI'):
        load_stack(path)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"CALLGATE_CONFIG": None, "CALLGATE_DEBUG": None, "COLUMNS": "200"})


def test_sip_without_a_forward_uri_names_the_numbers_without_one(
        runner: CliRunner, tmp_path: Path) -> None:
    """Every number needs somewhere to go: the command says which have none, exit 2."""
    path = tmp_path / "stack.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    result = runner.invoke(cli, ["sip", "--config", str(path), "--store", "memory://"])
    assert result.exit_code == 2
    assert "+14155550100" in result.output and "--forward" in result.output


@pytest.mark.parametrize("listen", ["5060", "host:", "host:99999", ":5060"])
def test_sip_rejects_a_bad_listen_address(runner: CliRunner, tmp_path: Path,
                                          listen: str) -> None:
    """--listen must be HOST:PORT; the error quotes the value."""
    path = tmp_path / "stack.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    result = runner.invoke(cli, ["sip", "--config", str(path), "--store", "memory://",
                                 "--listen", listen, "--forward", "sip:a@127.0.0.1"])
    assert result.exit_code == 2 and "HOST:PORT" in result.output


def test_sip_rejects_a_forward_that_is_not_a_sip_uri(runner: CliRunner, tmp_path: Path) -> None:
    """--forward http://... is refused with what is accepted."""
    path = tmp_path / "stack.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    result = runner.invoke(cli, ["sip", "--config", str(path), "--store", "memory://",
                                 "--forward", "http://agents"])
    assert result.exit_code == 2 and "SIP URI" in result.output


def test_sip_refuses_a_port_another_process_holds(runner: CliRunner, tmp_path: Path) -> None:
    """sippy binds with SO_REUSEPORT; the edge refuses a taken port instead of sharing it."""
    import socket

    path = tmp_path / "stack.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = runner.invoke(cli, ["sip", "--config", str(path), "--store", "memory://",
                                     "--listen", f"127.0.0.1:{port}",
                                     "--forward", "sip:a@127.0.0.1"])
    assert result.exit_code == 2 and "in use" in result.output
