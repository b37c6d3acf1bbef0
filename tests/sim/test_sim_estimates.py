"""What the simulator prints is true: every estimate is its count over its arrivals (to the
printed digits, in the terminal, JSON and HTML alike), and every interval covers the truth.

The property test plays profiled days (quiet nights, busy days) on one cap with several
seeds, in the three settings the queueing models describe: no queue (Erlang B), patient
callers (Erlang C), callers who hang up (Erlang A). The run's own truth is each hour's
stationary figure weighted by the run's own arrivals (or answered callers, or callers who
hung up) in that hour: the hours are long next to the handle time, so each hour settles
within minutes of its start.
"""

from __future__ import annotations

import html
import math
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from callgate.config import Stack, parse_stack
from callgate.planning.erlang import erlang_b, erlang_c
from callgate.planning.erlang_a import erlang_a
from callgate.planning.traffic_profile import HourlyProfile
from callgate.sim.commands import simulate
from callgate.sim.report import estimate_cells, print_report, sections, to_html
from callgate.sim.results import RunResult, to_document
from callgate.sim.simulate import Simulator
from callgate.sim.stats import Estimate, t975
from callgate.sim.traffic import Traffic

ROOT = Path(__file__).resolve().parents[2]
STACK = str(ROOT / "examples" / "stack.toml")
PROFILE = str(ROOT / "examples" / "profile-business-hours.toml")
NUMBER = "+15550000001"
AHT_S = 60.0
LINES = 5


def test_estimate_is_the_ratio_of_sums_not_the_mean_of_ratios() -> None:
    """A quiet batch (1 of 10) and a busy one (50 of 100): 51/110, not (0.1 + 0.5) / 2."""
    found = Estimate.of([(1, 10), (50, 100), (0, 0)])
    assert found is not None
    assert (found.value, found.numerator, found.denominator, found.batches) == (
        51 / 110, 51, 110, 2)
    ratio = 51 / 110
    spread = ((1 - ratio * 10) ** 2 + (50 - ratio * 100) ** 2) / 1
    assert math.isclose(found.half_width, t975(1) * math.sqrt(2 * spread) / 110)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500)), min_size=2, max_size=30))
def test_estimate_value_is_always_count_over_arrivals(batches: list[tuple[int, int]]) -> None:
    """For any batches, the point is sum(counts) / sum(arrivals) and the half-width >= 0;
    with equal arrivals per batch it is the classic batch-means interval."""
    batches = [(min(hits, trials), trials) for hits, trials in batches]
    found = Estimate.of(batches)
    used = [(h, t) for h, t in batches if t > 0]
    if len(used) < 2:
        assert found is None
        return
    assert found is not None
    assert found.value == sum(h for h, _ in used) / sum(t for _, t in used)
    assert found.half_width >= 0.0 and found.batches == len(used)
    same = Estimate.of([(h, 100) for h, _ in used])
    assert same is not None
    ratios = [h / 100 for h, _ in used]
    mean = sum(ratios) / len(ratios)
    sd = math.sqrt(sum((r - mean) ** 2 for r in ratios) / (len(ratios) - 1))
    assert math.isclose(same.half_width, t975(len(ratios) - 1) * sd / math.sqrt(len(ratios)),
                        rel_tol=1e-9, abs_tol=1e-12)


def test_estimate_takes_the_exact_total_for_its_point() -> None:
    """With ``total`` the value is total numerator / denominator (fsum over every wait)."""
    found = Estimate.of([(0.1 + 0.2, 2), (0.3, 1)], total=(0.6, 3))
    assert found is not None and found.value == 0.6 / 3


def test_profiled_example_day_prints_count_over_arrivals() -> None:
    """The issue's run: the queued and abandoned estimates are the counts over the arrivals
    in the table above them, in the terminal and in --json."""
    args = ["--config", STACK, "--profile", PROFILE, "--aht", "3m", "--seed", "1"]
    doc = _json(args)
    counts, estimates = doc["counts"], doc["estimates"]
    assert doc["warmup_s"] == 0
    for key, count in (("p_queued", "queued"), ("p_abandoned", "abandoned"),
                       ("p_rejected", "rejected")):
        assert (estimates[key]["numerator"], estimates[key]["denominator"]) == (
            counts[count], counts["arrivals"])
        assert estimates[key]["value"] == round(counts[count] / counts["arrivals"], 6)
    text = CliRunner(env={"COLUMNS": "200"}).invoke(simulate, args).output
    queued, arrivals = counts["queued"], counts["arrivals"]
    row = re.search(r"queued \(share of arrivals\)\s*│\s*([\d.]+)\s*│\s*([\d.]+)\s*│\s*(.+?)\s*│",
                    text)
    assert row is not None, text
    assert row.group(1) == f"{queued / arrivals:.4f}"
    assert row.group(3) == f"{queued:,} / {arrivals:,} arrivals"
    assert f"{100 * queued / arrivals:.1f}%" in text  # the counts table agrees


def _json(args: list[str]) -> dict[str, Any]:
    import json

    result = CliRunner().invoke(simulate, [*args, "--json"])
    assert result.exit_code == 0, result.output
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


# --------------------------------------------------------------------------- the property


def _stack(queue_max: int) -> Stack:
    return parse_stack(tomllib.loads(f"""
[gate]
lease_ttl = "1d"
max_call_duration = "1d"
poll_timeout = "1d"
[trunks.t]
max_concurrent = {LINES}
[plans.p]
max_concurrent = 100000
[accounts.a]
plan = "p"
[numbers."{NUMBER}"]
account = "a"
trunk = "t"
max_concurrent = 100000
[inbound]
queue_max = {queue_max}
max_wait = "1d"
"""))


def _day(quiet: float, busy: float) -> HourlyProfile:
    """``quiet`` erlangs at night, ``busy`` from 08:00 to 20:00."""
    return HourlyProfile(tuple((busy if 8 <= hour < 20 else quiet) * 3600 / AHT_S
                               for hour in range(24)))


Truth = Callable[[list[int], list[float]], dict[str, float]]


def _truth_b(arrivals: list[int], traffic: list[float]) -> dict[str, float]:
    lost = [n * erlang_b(a, LINES) for n, a in zip(arrivals, traffic, strict=True)]
    return {"p_rejected": sum(lost) / sum(arrivals)}


def _truth_c(arrivals: list[int], traffic: list[float]) -> dict[str, float]:
    stats = [erlang_c(a, LINES, AHT_S, 0) for a in traffic]
    waiting = [n * s.p_wait for n, s in zip(arrivals, stats, strict=True)]
    waited = [n * s.asa_s for n, s in zip(arrivals, stats, strict=True)]
    return {"p_queued": sum(waiting) / sum(arrivals),
            "wait_inbound_s": sum(waited) / sum(arrivals),
            "wait_queued_inbound_s": sum(waited) / sum(waiting)}


def _truth_a(patience_s: float) -> Truth:
    def truth(arrivals: list[int], traffic: list[float]) -> dict[str, float]:
        stats = [erlang_a(a, LINES, AHT_S, patience_s, 0) for a in traffic]
        pairs = list(zip(arrivals, stats, strict=True))
        answered = [n * (1 - s.p_abandon) for n, s in pairs]
        gone = [n * s.p_abandon for n, s in pairs]
        answered_wait = [n * (1 - s.p_abandon) * s.asa_answered_s for n, s in pairs]
        all_wait = [n * s.mean_wait_all_s for n, s in pairs]
        return {"p_queued": sum(n * s.p_wait for n, s in pairs) / sum(arrivals),
                "p_abandoned": sum(gone) / sum(arrivals),
                "wait_inbound_s": sum(answered_wait) / sum(answered),
                "wait_queued_inbound_s": sum(answered_wait) / sum(
                    n * (s.p_wait - s.p_abandon) for n, s in pairs),
                "wait_abandoned_s": (sum(all_wait) - sum(answered_wait)) / sum(gone)}
    return truth


MODELS: tuple[tuple[str, int, float, HourlyProfile, Truth], ...] = (
    ("erlang_b", 0, math.inf, _day(0.5, 4.0), _truth_b),
    ("erlang_c", 100_000, math.inf, _day(0.5, 3.5), _truth_c),
    ("erlang_a", 100_000, 30.0, _day(0.5, 5.0), _truth_a(30.0)),
)
SEEDS = (1, 2, 3)


def _run(queue_max: int, patience_s: float, day: HourlyProfile,
         seed: int) -> tuple[RunResult, list[int]]:
    traffic = Traffic(numbers=(NUMBER,), aht_s=AHT_S, profile=day, patience_s=patience_s)
    simulator = Simulator(_stack(queue_max), traffic, duration_s=86_400.0, seed=seed,
                          batches=20, config="one-cap.toml")
    per_hour = [0] * 24
    arrived = simulator.tally.arrived

    def counted(t_s: float, direction: Any) -> int:
        per_hour[int(t_s // 3600) % 24] += 1
        return arrived(t_s, direction)

    simulator.tally.arrived = counted  # type: ignore[method-assign]
    return simulator.run(), per_hour


def _printed_matches_counts(result: RunResult) -> None:
    """Every printed estimate is its count over its arrivals, as the counts tables say."""
    doc = to_document(result)
    counts, waits = doc["counts"], doc["waits_s"]
    shares = {"p_rejected": "rejected", "p_queued": "queued", "p_abandoned": "abandoned"}
    for key, estimate in result.estimates.items():
        if estimate is None:
            continue
        if key in shares:
            assert (estimate.numerator, estimate.denominator) == (
                counts[shares[key]], counts["arrivals"]), key
        else:
            kind = key.removeprefix("wait_").removesuffix("_s")
            assert estimate.denominator == waits[kind]["n"], key
            assert f"{estimate.value:,.1f}" == f"{waits[kind]['mean']:,.1f}", key
        assert estimate.value == estimate.numerator / estimate.denominator
        assert doc["estimates"][key]["value"] == round(estimate.value, 6)
        cells = estimate_cells(key, estimate)
        digits = 4 if key in shares else 1
        assert cells[0] == f"{estimate.numerator / estimate.denominator:,.{digits}f}"
    table = next(s for s in sections(result) if s.title.startswith("Estimates"))
    console = Console(record=True, width=240)
    print_report(result, console)
    text = console.export_text()
    for row in table.rows:
        assert re.search(r"\s*│\s*".join(map(re.escape, row)), text), row


@pytest.mark.slow
def test_every_interval_covers_the_runs_own_truth_on_profiled_days() -> None:
    """Three models x three seeds on a day of quiet nights and busy days: every printed
    point estimate is count / arrivals, no interval misses its truth by more than twice
    its half-width, and at least 24 of the 27 intervals cover it."""
    misses: list[str] = []
    intervals = 0
    for name, queue_max, patience_s, day, truth in MODELS:
        traffic = [calls / 3600 * AHT_S for calls in day.calls]
        for seed in SEEDS:
            result, per_hour = _run(queue_max, patience_s, day, seed)
            _printed_matches_counts(result)
            for key, value in truth(per_hour, traffic).items():
                found = result.estimates[key]
                assert found is not None, (name, key)
                intervals += 1
                off = abs(found.value - value) / found.half_width
                assert off <= 2.0, (name, seed, key, value, found)
                if off > 1.0:
                    misses.append(f"{name} seed {seed} {key}: {value:.4g} outside {found}")
    assert intervals == 27
    assert len(misses) <= 3, misses


def test_html_prints_what_the_terminal_prints() -> None:
    """The HTML page shows the same estimate cells as the terminal, readable column names,
    percentages (not raw fractions), and the stack's file name, not its path."""
    day = _day(0.5, 5.0)
    result, _ = _run(100_000, 30.0, day, seed=4)
    result.config = "/home/someone/secret/one-cap.toml"
    page = to_html(result)
    title = re.search(r"<title>(.*?)</title>", page)
    assert title is not None and "one-cap.toml" in title.group(1)
    assert "/home/someone" not in page
    for section in sections(result, every_scope=True):
        for column in section.columns:
            assert "_" not in column, column
            assert f">{column}</th>" in page
        for row in section.rows:
            for cell in row:
                assert f">{html.escape(cell)}</td>" in page, cell
    at_cap = next(row for row in sections(result)[-1].rows if row[0] == "trunk")[5]
    assert at_cap.endswith("%") and f">{at_cap}</td>" in page


def test_constant_rate_estimates_name_the_arrivals_after_the_warm_up() -> None:
    """A constant-rate run leaves its first 5% out: each estimate is its own count over the
    arrivals after the warm-up, and the table says so."""
    args = ["--config", STACK, "--rate", "0.1", "--hours", "2", "--aht", "3m", "--seed", "2"]
    doc = _json(args)
    assert doc["warmup_s"] == 360
    queued = doc["estimates"]["p_queued"]
    assert 0 < queued["denominator"] < doc["counts"]["arrivals"]
    assert queued["value"] == round(queued["numerator"] / queued["denominator"], 6)
    text = CliRunner(env={"COLUMNS": "200"}).invoke(simulate, args).output
    assert "after a 6.0 min warm-up" in text
    assert f"{queued['numerator']:,.0f} / {queued['denominator']:,.0f} arrivals" in text
