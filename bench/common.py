"""What every benchmark shares: the budget, the result row, the machine, the timer.

Machines here are shared and noisy, so a figure on its own means little: every
benchmark times callgate and its baseline in the same run, in interleaved rounds
(A B A B ...), takes each side's best round, and reports the ratio.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Budget:
    """How long each benchmark may run; ``quick`` is a ~30 s smoke run."""

    quick: bool
    rounds: int
    round_s: float
    sqlite_round_s: float
    http_rounds: int
    http_round_s: float  # one wrk run (whole seconds: wrk takes no fractions)
    http_pairs: int  # one round of the Python load generator (without wrk)
    http_workers: int
    leases: int

    @classmethod
    def full(cls) -> Budget:
        return cls(quick=False, rounds=5, round_s=1.0, sqlite_round_s=1.5,
                   http_rounds=5, http_round_s=3.0, http_pairs=3000, http_workers=8,
                   leases=100_000)

    @classmethod
    def smoke(cls) -> Budget:
        return cls(quick=True, rounds=3, round_s=0.3, sqlite_round_s=0.4,
                   http_rounds=5, http_round_s=1.0, http_pairs=400, http_workers=8,
                   leases=10_000)


@dataclass
class Result:
    """One row of the final table.

    For a speed benchmark ``ratio`` is callgate / baseline and the target a minimum
    ratio; for a size benchmark the baseline *is* the target (a maximum), ``ratio`` is
    figure / target and must stay below 1.
    """

    name: str
    unit: str
    callgate: float | None
    baseline: float | None
    baseline_name: str
    target: float
    higher_is_better: bool = True
    notes: list[str] = field(default_factory=list)
    rounds: dict[str, list[float]] = field(default_factory=dict)
    status: str = "ran"  # "ran", "skipped" or "error"

    @property
    def ratio(self) -> float | None:
        if self.callgate is None or not self.baseline:
            return None
        return self.callgate / self.baseline

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        if ratio is None:
            return None
        return ratio >= self.target if self.higher_is_better else ratio < self.target

    @property
    def target_text(self) -> str:
        return f">= {self.target:g}x" if self.higher_is_better else f"< {self.target:g}x"

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.update(ratio=self.ratio, met=self.met, target_text=self.target_text)
        return doc


def machine() -> dict[str, Any]:
    """The machine the figures came from: CPU model, cores, Python."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
    }


def rss_bytes() -> int:
    """This process's resident set size, from ``/proc/self/status`` (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status (needs Linux)")


class Runner(Protocol):
    """One side of a comparison: ``run(n)`` performs ``n`` iterations."""

    def run(self, n: int) -> None: ...


def rate(runner: Runner, seconds: float, batch: int = 200, max_batches: int = 1_000_000) -> float:
    """Iterations per second of ``runner`` over about ``seconds`` of wall time."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    for _ in range(max_batches):
        runner.run(batch)
        done += batch
        if time.perf_counter() >= deadline:
            break
    return done / (time.perf_counter() - start)


def compare(
    sides: Sequence[tuple[str, Runner]], rounds: int, seconds: float,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, list[float]]:
    """Interleaved rounds of every side; returns each side's rate per round."""
    for _, runner in sides:
        runner.run(50)  # warm up caches and code paths outside the timed rounds
    rates: dict[str, list[float]] = {name: [] for name, _ in sides}
    for index in range(rounds):
        for name, runner in sides:
            rates[name].append(rate(runner, seconds))
        progress(f"round {index + 1}/{rounds}: "
                 + ", ".join(f"{n} {r[-1]:,.0f}/s" for n, r in rates.items()))
    return rates
