"""bench/bench_http.py runs end to end: both servers start, every answer is checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.bench_http import bench_http
from bench.common import Budget
from tests.test_fresh_machine import path_without
from tests.tools import require_tool

pytestmark = pytest.mark.slow


def test_the_http_bench_measures_both_sides_with_wrk() -> None:
    """A tiny budget still gives a rate per side from wrk, every POST admitted (no ratio judged)."""
    require_tool("wrk", "wrk")
    budget = Budget(quick=True, rounds=1, round_s=0.1, sqlite_round_s=0.1, http_rounds=1,
                    http_round_s=1.0, http_pairs=20, http_workers=2, leases=10)
    lines: list[str] = []
    [result] = bench_http(budget, lines.append)
    assert result.status == "ran", result.notes
    assert result.callgate and result.baseline, result.notes
    assert len(result.rounds["callgate"]) == len(result.rounds["bare"]) == 1
    assert any("wrk -t2 -c2" in note for note in result.notes), result.notes
    assert lines and lines[-1].startswith("round 1/1")


def test_without_wrk_the_http_bench_says_so_and_uses_its_own_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no wrk on PATH the bench prints why and measures with bench/loadgen.py instead."""
    monkeypatch.setenv("PATH", path_without(("wrk",), tmp_path))
    budget = Budget(quick=True, rounds=1, round_s=0.1, sqlite_round_s=0.1, http_rounds=1,
                    http_round_s=1.0, http_pairs=20, http_workers=2, leases=10)
    lines: list[str] = []
    [result] = bench_http(budget, lines.append)
    assert result.status == "ran" and result.callgate and result.baseline, result.notes
    assert lines[0] == "wrk not found (apt-get install wrk): load from bench/loadgen.py"
    assert any("wrk not found" in note for note in result.notes), result.notes
