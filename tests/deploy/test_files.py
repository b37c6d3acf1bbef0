"""Deployment files (Dockerfile, compose, systemd unit, Makefile) use only what the CLI has.

Images cannot be pulled here, so nothing is built or started: each file is parsed, and every
command line it runs is parsed by the real click commands (a renamed or removed flag fails
here), every CALLGATE_* variable must be a CLI option's variable (and its value must pass
that option's checks), every port must agree, and every other variable must be a token the
deployed stack reads. ``systemd-analyze verify`` checks the unit where it is installed.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from tests.tools import require_tool

from callgate.cli import cli
from callgate.config import load_stack
from callgate.service.app import create_app
from callgate.testing import memory_gate

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
UNIT = DEPLOY / "callgate.service"
DEPLOY_STACK = DEPLOY / "stack.toml"


def cli_variables() -> set[str]:
    """Every environment variable some ``callgate`` command reads for an option."""
    names: set[str] = set()
    for command in [cli, *cli.commands.values()]:
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                names.add(envvar)
            elif envvar:
                names.update(envvar)
    return names


def parse_command(argv: Sequence[str], env: Mapping[str, str],
                  monkeypatch: pytest.MonkeyPatch) -> click.Context:
    """Parse ``callgate ARGV`` with ``env`` as the real command would, running nothing.

    An unknown command or flag, or a bad value in a flag or a CALLGATE_* variable, raises
    click's error, which fails the test with click's own message.
    """
    for name in cli_variables():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert argv, "no command"
    command = cli.commands.get(argv[0])
    assert command is not None, f"callgate has no command {argv[0]!r}"
    return command.make_context(argv[0], list(argv[1:]))


def app_paths() -> set[str]:
    """The paths the gate's app serves (the example stack: no token variables needed)."""
    gate = memory_gate(load_stack(ROOT / "examples" / "stack.toml"))
    return {getattr(route, "path", "") for route in create_app(gate).routes}


def token_variables() -> set[str]:
    """The variables deploy/stack.toml's [[api.tokens]] read their values from."""
    stack = load_stack(DEPLOY_STACK)
    return {token.env for token in stack.api.tokens if token.env}


# the Dockerfile --------------------------------------------------------------------------
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
             if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def docker_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            env.update(dict(item.split("=", 1) for item in shlex.split(rest)))
    return env


def test_the_dockerfile_runs_a_real_command_with_real_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ENTRYPOINT + CMD parse as callgate's command; each CALLGATE_* ENV is an option's variable."""
    stage = final_stage(dockerfile())
    last = {keyword: rest for keyword, rest in stage}
    argv = json.loads(last["ENTRYPOINT"]) + json.loads(last["CMD"])
    assert argv[0] == "callgate"
    env = docker_env(stage)
    ours = {name for name in env if name.startswith("CALLGATE_")}
    assert ours and ours <= cli_variables(), ours - cli_variables()
    assert set(env) - ours <= {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
    ctx = parse_command(argv[1:], env, monkeypatch)
    assert ctx.info_name == "serve" and ctx.params["port"] == int(env["CALLGATE_PORT"])
    assert ctx.params["config"] == env["CALLGATE_CONFIG"]


def test_the_dockerfile_is_small_unprivileged_and_checks_readiness() -> None:
    """Non-root USER, runtime extras only, EXPOSE = CALLGATE_PORT, HEALTHCHECK on /readyz."""
    instructions = dockerfile()
    stage = final_stage(instructions)
    last = {keyword: rest for keyword, rest in stage}
    assert last["USER"] not in ("root", "0")
    assert [k for k, _ in stage].index("USER") < [k for k, _ in stage].index("ENTRYPOINT")
    installs = [rest for keyword, rest in instructions
                if keyword == "RUN" and "pip" in rest and ("install" in rest or "wheel" in rest)]
    extras = {extra for rest in installs for group in re.findall(r"\[([a-z,]+)\]", rest)
              for extra in group.split(",")}
    assert installs and extras == {"redis"}  # no dev tools, no planner charts in the image
    assert "--no-cache-dir" in " ".join(installs)
    env = docker_env(stage)
    assert last["EXPOSE"] == env["CALLGATE_PORT"]
    assert "/readyz" in last["HEALTHCHECK"] and "CALLGATE_PORT" in last["HEALTHCHECK"]
    assert "/readyz" in app_paths()
    copied = [part for keyword, rest in instructions if keyword == "COPY"
              and "--from" not in rest for part in rest.split()[:-1]]
    assert copied and all((ROOT / part).exists() for part in copied), copied


# compose ---------------------------------------------------------------------------------
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def gates() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in compose()["services"].items():
        if "build" in service or str(service.get("image", "")).startswith("callgate"):
            yield name, service


def test_compose_runs_two_gates_on_one_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two gate services, each a valid `callgate serve` on compose's Redis, distinct host ports."""
    document = compose()
    served = dict(gates())
    assert len(served) == 2
    assert "redis" in document["services"]
    host_ports = set()
    for name, service in served.items():
        env = {k: str(v) for k, v in service["environment"].items()}
        ours = {k for k in env if k.startswith("CALLGATE_")}
        assert ours <= cli_variables(), (name, ours - cli_variables())
        assert set(env) - ours == token_variables(), name  # the tokens the stack reads
        entry = json.loads(dict(final_stage(dockerfile()))["ENTRYPOINT"])
        ctx = parse_command([*entry[1:], *service["command"]],
                            {k: v for k, v in env.items() if k in ours}, monkeypatch)
        assert ctx.info_name == "serve"
        assert env["CALLGATE_STORE"].startswith("redis://redis:")
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        for mapping in service["ports"]:
            host, container = mapping.rsplit(":", 1)[0], mapping.rsplit(":", 1)[1]
            assert int(container) == ctx.params["port"], mapping
            host_ports.add(host)
        mounted = {volume.split(":")[1] for volume in service["volumes"]}
        assert env["CALLGATE_CONFIG"] in mounted
        assert (COMPOSE.parent / service["volumes"][0].split(":")[0]).exists()
        assert service["stop_signal"] == "SIGTERM"
    assert len(host_ports) == 2


def test_the_deployed_stack_is_valid_and_needs_tokens() -> None:
    """deploy/stack.toml loads, and has tokens (the gates listen beyond loopback)."""
    stack = load_stack(DEPLOY_STACK)
    assert stack.api.tokens and any(token.admin for token in stack.api.tokens)


# the systemd unit --------------------------------------------------------------------------
def unit() -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
        else:
            key, _, value = line.partition("=")
            sections[current].append((key.strip(), value.strip()))
    return sections


def test_the_unit_reloads_on_sighup_stops_on_sigterm_and_runs_a_real_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ExecStart parses as `callgate serve` with the unit's variables; reload = HUP, stop = TERM."""
    service = unit()["Service"]
    values = dict(service)
    env = dict(value.split("=", 1) for key, value in service if key == "Environment")
    assert set(env) <= cli_variables(), set(env) - cli_variables()
    argv = shlex.split(values["ExecStart"])
    assert Path(argv[0]).name == "callgate"
    ctx = parse_command(argv[1:], env, monkeypatch)
    assert ctx.info_name == "serve" and ctx.params["host"] == "127.0.0.1"
    assert shlex.split(values["ExecReload"])[1:] == ["-HUP", "$MAINPID"]
    assert values["KillSignal"] == "SIGTERM"


@pytest.mark.slow
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit with ExecStart pointed at this venv's callgate."""
    tool = require_tool("systemd-analyze", "systemd")
    executable = Path(sys.executable).parent / "callgate"
    assert executable.exists(), executable
    text = UNIT.read_text(encoding="utf-8")
    rewritten = re.sub(r"^ExecStart=\S+", f"ExecStart={executable}", text, flags=re.MULTILINE)
    assert rewritten != text
    copy = tmp_path / "callgate.service"
    copy.write_text(rewritten, encoding="utf-8")
    done = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True,
                          timeout=120, check=False)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if "callgate.service" in line]
    assert done.returncode == 0 and complaints == [], done.stdout + done.stderr


# the Makefile --------------------------------------------------------------------------------
def make_recipe(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_make_run_installs_the_runtime_only_and_serves_with_real_flags(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`make run`'s stamp installs no extras; its serve line parses; `make test`'s installs dev."""
    run_target = (ROOT / "Makefile").read_text(encoding="utf-8")
    run_stamp = re.search(r"^run: \$\((\w+)\)", run_target, re.MULTILINE)
    test_stamp = re.search(r"^test: \$\((\w+)\)", run_target, re.MULTILINE)
    assert run_stamp and test_stamp and run_stamp.group(1) != test_stamp.group(1)
    stamps = dict(re.findall(r"^(\w+) := (\S+)$", run_target, re.MULTILINE))
    run_install = make_recipe(f"$({run_stamp.group(1)})")
    test_install = make_recipe(f"$({test_stamp.group(1)})")
    assert stamps[run_stamp.group(1)] != stamps[test_stamp.group(1)]
    assert any(line.endswith("install --quiet -e .") for line in run_install), run_install
    assert any("'.[dev]'" in line for line in test_install), test_install
    serve = shlex.split(make_recipe("run")[0].replace("$(BIN)/", "").replace(
        "$(CONFIG)", "examples/stack.toml"))
    ctx = parse_command(serve[1:], {}, monkeypatch)
    assert ctx.info_name == "serve" and ctx.params["store"] == "sqlite:///callgate.db"
