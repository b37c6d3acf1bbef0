"""A machine without the external tools still passes: every tool-dependent fixture skips.

Each case runs the tests of one fixture that needs a tool (today: ``redis-server`` and
``redis-cli``) in a fresh pytest process whose ``PATH`` lacks the tool and whose
environment lacks ``CI``. They must all be skipped, none failed or errored (the suite turns
warnings into errors, so a temporary directory left behind would show up as an error).
With ``CI`` set the same tests must fail instead: CI installs the tools.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 300.0

# fixture -> (the tools it needs, the tests that use it)
FIXTURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "redis_url (tests/stores/conftest.py)": (
        ("redis-server", "redis-cli"), ("tests/stores/test_redis_store.py",)),
    "own_server (tests/stores/conftest.py)": (
        ("redis-server", "redis-cli"),
        ("tests/stores/test_redis_processes.py::test_redis_outage_gives_explicit_decisions_"
         "and_recovers",)),
    "store_factory[redis, redis-cluster] (tests/conftest.py)": (
        ("redis-server", "redis-cli"), ("tests/gate/test_decisions.py", "-k", "redis")),
    "the Redis state machines (tests/gate/test_stateful.py)": (
        ("redis-server", "redis-cli"), ("tests/gate/test_stateful.py", "-k", "Redis")),
}


def path_without(tools: tuple[str, ...], shadow_root: Path) -> str:
    """``PATH`` with ``tools`` gone: a directory holding one is replaced by a copy without it.

    The copy is a directory of symlinks to everything else in the original, so every other
    program stays reachable.
    """
    entries = []
    for index, directory in enumerate(os.environ.get("PATH", "").split(os.pathsep)):
        folder = Path(directory)
        if not any((folder / tool).exists() for tool in tools):
            entries.append(directory)
            continue
        shadow = shadow_root / f"path-{index}"
        shadow.mkdir(parents=True)
        for item in folder.iterdir():
            if item.name not in tools:
                (shadow / item.name).symlink_to(item)
        entries.append(str(shadow))
    return os.pathsep.join(entries)


@dataclass
class Outcome:
    code: int
    counts: dict[str, int]
    output: str


def run_without(tools: tuple[str, ...], args: tuple[str, ...], tmp: Path, *,
                ci: bool) -> Outcome:
    """Run pytest on ``args`` in a subprocess without ``tools`` on PATH; count the results."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PATH"] = path_without(tools, tmp / "shadow")
    if ci:
        env["CI"] = "1"
    report = tmp / "report.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--junitxml={report}", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    counts = {"tests": 0, "skipped": 0, "failures": 0, "errors": 0}
    for case in ET.parse(report).getroot().iter("testcase"):
        counts["tests"] += 1
        for kind, key in (("skipped", "skipped"), ("failure", "failures"), ("error", "errors")):
            if case.find(kind) is not None:
                counts[key] += 1
    return Outcome(proc.returncode, counts, proc.stdout[-4000:] + proc.stderr[-2000:])


@pytest.mark.parametrize("fixture", sorted(FIXTURES))
def test_without_the_tool_the_fixtures_tests_skip_cleanly(fixture: str, tmp_path: Path) -> None:
    """Without the tool on PATH and CI unset, the fixture's tests skip; none fails or errors."""
    tools, args = FIXTURES[fixture]
    result = run_without(tools, args, tmp_path, ci=False)
    counts = result.counts
    assert counts["tests"] > 0, result.output
    assert counts["failures"] == counts["errors"] == 0, result.output
    assert counts["skipped"] >= 1, result.output  # (tests without the fixture still pass)
    assert result.code == 0, result.output
    assert "not found on PATH" in result.output


def test_under_ci_a_missing_tool_fails_instead_of_skipping(tmp_path: Path) -> None:
    """With CI set, a test whose tool is missing fails and says CI must run it."""
    result = run_without(("redis-server", "redis-cli"),
                         ("tests/gate/test_stateful.py", "-k", "TestRedisStore"), tmp_path,
                         ci=True)
    assert result.code == 1, result.output
    assert result.counts["failures"] + result.counts["errors"] >= 1, result.output
    assert "CI must run the Redis tests" in result.output
