"""Run every gate benchmark and print each figure as a ratio to a baseline from the same run.

    .venv/bin/python bench/run.py            # the full suite (~2-3 min on 2 cores)
    .venv/bin/python bench/run.py --quick    # a ~30 s smoke run, figures rougher
    .venv/bin/python bench/run.py --json     # machine-readable results on stdout
    .venv/bin/python bench/run.py --profile  # plus cProfile's top 10 of admit+release

A missed target is printed as NOT MET; the exit status is 0 unless a benchmark failed to
run (1), or ``--strict`` is given and a target was missed (2).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

# bench/ runs as a script: put the checkout on the path so `bench.*` imports.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.table import Table

from bench.bench_gate import bench_memory_store, bench_sqlite_store, profile
from bench.bench_http import bench_http
from bench.bench_memory import bench_memory
from bench.common import Budget, Result, machine

Bench = Callable[[Budget, Callable[[str], None]], list[Result]]
BENCHES: dict[str, tuple[str, Bench]] = {
    "gate": ("memory store admit+release", bench_memory_store),
    "sqlite": ("SQLite store admit+release", bench_sqlite_store),
    "http": ("HTTP POST+DELETE", bench_http),
    "memory": ("memory and disk for 100,000 leases", bench_memory),
}


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f} {unit}" if unit == "MB" else f"{value:,.0f} {unit}"


def _met(result: Result) -> str:
    if result.status != "ran":
        return result.status
    met = result.met
    if met is None:
        return "-"
    return "[green]yes[/]" if met else "[bold red]NOT MET[/]"


def table(results: list[Result]) -> Table:
    out = Table(title="callgate benchmarks (ratio = callgate / baseline, same run)")
    for name, justify in (("#", "right"), ("benchmark", "left"), ("callgate", "right"),
                          ("baseline", "left"), ("baseline figure", "right"), ("ratio", "right"),
                          ("target", "right"), ("met", "left")):
        out.add_column(name, justify=justify)  # type: ignore[arg-type]
    for index, r in enumerate(results, 1):
        ratio = r.ratio
        out.add_row(str(index), r.name, _figure(r.callgate, r.unit), r.baseline_name,
                    _figure(r.baseline, r.unit), "-" if ratio is None else f"{ratio:.3f}x",
                    r.target_text, _met(r))
    return out


def shortfall(result: Result) -> str | None:
    """How far a missed target is, in words; None when met or not run."""
    ratio = result.ratio
    if result.met is not False or ratio is None:
        return None
    if result.higher_is_better:
        return (f"{result.name} vs {result.baseline_name}: {ratio:.3f}x against "
                f"{result.target_text}; callgate needs "
                f"{result.target / ratio:.1f}x its speed to meet it")
    return (f"{result.name}: {result.callgate:,.1f} {result.unit} against the target "
            f"{result.baseline:,.1f} {result.unit} ({(ratio - 1) * 100:.0f}% over)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run")
    parser.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    parser.add_argument("--only", default=",".join(BENCHES),
                        help=f"comma-separated subset of: {', '.join(BENCHES)}")
    parser.add_argument("--profile", action="store_true",
                        help="print cProfile's top 10 of admit+release (memory, sqlite)")
    parser.add_argument("--strict", action="store_true", help="exit 2 if a target is missed")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHES))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {unknown}; accepted: {', '.join(BENCHES)}")

    console = Console(stderr=args.json, highlight=False)
    if not console.is_terminal:
        console.width = 160  # files and pipes get the whole table, not rich's 80 columns
    budget = Budget.smoke() if args.quick else Budget.full()
    host = machine()
    console.print(f"[bold]machine[/]: {host['cpu']}, {host['cores']} cores, {host['python']}, "
                  f"{host['platform']}")
    console.print(f"[bold]command[/]: {' '.join([Path(sys.executable).name, *sys.argv])}"
                  + ("  (quick: smoke figures, rougher)" if budget.quick else ""))
    started = time.perf_counter()
    results: list[Result] = []
    failed = False
    for name in chosen:
        title, bench = BENCHES[name]
        console.print(f"\n[bold]{title}[/]")
        begun = time.perf_counter()
        try:
            got = bench(budget, lambda text: console.print(f"  {text}"))
        except Exception as exc:
            failed = True
            console.print(f"  [bold red]error[/]: {exc}")
            console.print(traceback.format_exc(), markup=False)
            got = [Result(title, "", None, None, "-", 0.0, status="error",
                          notes=[f"error: {type(exc).__name__}: {exc}"])]
        console.print(f"  ({time.perf_counter() - begun:.1f} s)")
        results.extend(got)

    elapsed = time.perf_counter() - started
    console.print()
    console.print(table(results))
    console.print("[bold]how each figure was made[/]")
    for index, r in enumerate(results, 1):
        console.print(f"  {index}. {r.name} vs {r.baseline_name}", markup=False)
        for note in r.notes:
            console.print(f"     - {note}", markup=False)
    misses = [text for r in results if (text := shortfall(r))]
    if misses:
        console.print("[bold red]targets NOT MET[/]")
        for text in misses:
            console.print(f"  - {text}", markup=False)
    console.print(f"total {elapsed:.0f} s")

    if args.profile:
        for kind in ("memory", "sqlite"):
            iterations = (2000 if kind == "memory" else 300) // (4 if budget.quick else 1)
            console.print(f"\n[bold]cProfile, {iterations} admit+release on the {kind} "
                          "store (top 10 by own time)[/]")
            console.print(profile(kind, iterations), markup=False)

    if args.json:
        json.dump({"machine": host, "quick": budget.quick, "budget": asdict(budget),
                   "command": [sys.executable, *sys.argv], "seconds": elapsed,
                   "results": [r.to_json() for r in results]}, sys.stdout, indent=2)
        print()
    if failed:
        return 1
    if args.strict and misses:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
