"""HTTP: ``POST /v1/calls`` + ``DELETE /v1/calls/{id}``, ``callgate serve`` against bare Starlette.

Both sides run on the same server stack, uvicorn on httptools and uvloop, each with its
shipped default logging: callgate is ``callgate serve`` itself (a memory store, the system
clock, its decision line per call on stderr, no access line: its defaults) and the baseline
is a bare Starlette app with the same two routes returning constants, under ``uvicorn
--http httptools --loop uvloop`` (uvicorn's defaults: an access line per request).

The load comes from wrk (Debian's package; ``.ci/run`` installs it) with
``bench/wrk_pairs.lua``: one connection per wrk thread, each sending POST then the DELETE
of that call, every POST checked to be admitted. Without wrk the bench says so and uses
:mod:`bench.loadgen` (raw asyncio in this process, slower: it shares the cores). Rounds
interleave (callgate, bare, callgate, ...); each side's figure is its median round. The
stack is the example's layers with caps and trunk CPS raised so that nothing blocks on the
wall clock (windows stay on).

    .venv/bin/python bench/bench_http.py            # or: bench/run.py --only http
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":  # run as a script: put the checkout on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, Budget, Result
from bench.http_target import HTTP_CAP, HTTP_CPS
from bench.loadgen import LoadResult, run_load
from bench.stacks import roomy_stack, roomy_toml, trunk_lines

HOST = "127.0.0.1"
WRK_SCRIPT = ROOT / "bench" / "wrk_pairs.lua"
SERVER_STACK = ("httptools", "uvloop")
Progress = Callable[[str], None]


class ServerError(RuntimeError):
    """A benchmark server did not start or died; the message carries its output."""


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass(frozen=True)
class Round:
    """One side's timed round: pairs per second and per-request latency."""

    rate: float
    p50_ms: float
    p99_ms: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def callgate_command(config: Path, port: int) -> list[str]:
    """``callgate serve`` as shipped: only the stack file, the store, the address."""
    return [sys.executable, "-m", "callgate.cli", "serve", "--config", str(config),
            "--store", "memory://", "--host", HOST, "--port", str(port)]


def bare_command(port: int) -> list[str]:
    """uvicorn's defaults (log level info, access log on) on the same parser and loop."""
    return [sys.executable, "-m", "uvicorn", "--factory", "bench.http_target:bare_app",
            "--host", HOST, "--port", str(port), "--http", SERVER_STACK[0],
            "--loop", SERVER_STACK[1]]


def _wait_ready(server: Server, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerError(f"{server.name} exited with {server.process.returncode}:\n"
                              f"{server.output()}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, server.port), 0.5):
            return
        time.sleep(0.05)  # polling a real server's port, bounded by the deadline
    raise ServerError(f"{server.name} did not listen on {HOST}:{server.port} within "
                      f"{deadline_s:g} s:\n{server.output()}")


@contextlib.contextmanager
def serve(name: str, command: Callable[[int], list[str]], workdir: Path,
          startup_s: float = 30.0) -> Iterator[Server]:
    """Run ``command(port)`` until the block ends; its stdout and stderr go to a file."""
    port = free_port()
    log = workdir / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    with log.open("wb") as sink:
        process = subprocess.Popen(command(port), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                   stdout=sink, stderr=sink)
    server = Server(name, port, process, log)
    try:
        _wait_ready(server, startup_s)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def wrk_round(wrk: str, server: Server, tag: str, numbers: Sequence[str], seconds: float,
              connections: int) -> Round:
    """One wrk run of ``seconds`` against ``server``; raises when an answer was wrong."""
    command = [wrk, f"-t{connections}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
               "-s", str(WRK_SCRIPT), f"http://{HOST}:{server.port}", "--", tag,
               ",".join(numbers)]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          timeout=seconds + 60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise ServerError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    report = json.loads(lines[-1])
    if report["bad"] or report["socket_errors"] or not report["pairs"]:
        raise ServerError(f"{server.name}: {report['bad']} wrong answers, "
                          f"{report['socket_errors']} socket errors, {report['pairs']} pairs "
                          f"(e.g. {report['example_bad']!r})\n{server.output()}")
    return Round(report["pairs"] / report["seconds"], report["p50_ms"], report["p99_ms"])


def loadgen_round(server: Server, tag: str, numbers: Sequence[str], pairs: int,
                  workers: int) -> Round:
    """The fallback without wrk: bench.loadgen's raw-asyncio pairs."""
    result = run_load(HOST, server.port, tag, numbers, pairs, workers)
    latencies = LoadResult(0, 1.0, result.latencies_s)
    return Round(result.rate, latencies.percentile(0.5) * 1e3 / 2,
                 latencies.percentile(0.99) * 1e3 / 2)


def bench_http(budget: Budget, progress: Progress) -> list[Result]:
    name = "http POST + DELETE /v1/calls"
    lines, _ = trunk_lines(roomy_stack(HTTP_CAP, HTTP_CPS))
    missing = [module for module in SERVER_STACK if not _importable(module)]
    if missing:
        return [Result(name, "pairs/s", None, None, "bare Starlette, same routes", 0.5,
                       status="skipped",
                       notes=[f"skipped: {', '.join(missing)} not installed "
                              "(pip install 'uvicorn[standard]')"])]
    wrk = shutil.which("wrk")
    connections = budget.http_workers
    runs: dict[str, list[Round]] = {"callgate": [], "bare": []}

    def one_round(server: Server, tag: str, seconds: float, pairs: int) -> Round:
        if wrk is not None:
            return wrk_round(wrk, server, tag, lines, seconds, connections)
        return loadgen_round(server, tag, lines, pairs, connections)

    with tempfile.TemporaryDirectory(prefix="callgate-http-") as tmp:
        config = Path(tmp) / "stack.toml"
        config.write_text(roomy_toml(HTTP_CAP, HTTP_CPS), encoding="utf-8")
        with serve("callgate", lambda port: callgate_command(config, port), Path(tmp)) as ours, \
                serve("bare", bare_command, Path(tmp)) as bare:
            servers = {"callgate": ours, "bare": bare}
            if wrk is None:
                progress("wrk not found (apt-get install wrk): load from bench/loadgen.py")
            for side, server in servers.items():  # warm-up, untimed
                one_round(server, f"warm-{side}", 1.0, 200)
            for index in range(budget.http_rounds):
                for side, server in servers.items():
                    runs[side].append(one_round(server, f"r{index}-{side}",
                                                budget.http_round_s, budget.http_pairs))
                progress(f"round {index + 1}/{budget.http_rounds}: " + ", ".join(
                    f"{s} {r[-1].rate:,.0f} pairs/s" for s, r in runs.items()))
            decisions = ours.log.read_text(errors="replace").count("admitted at")
            access = bare.log.read_text(errors="replace").count('HTTP/1.1" 200')
    rates = {side: [r.rate for r in rounds] for side, rounds in runs.items()}
    driver = (f"wrk -t{connections} -c{connections} -d{budget.http_round_s:g}s -s "
              "bench/wrk_pairs.lua (one connection per thread; every POST checked admitted)"
              if wrk is not None else
              f"bench/loadgen.py, {budget.http_pairs} pairs per round over {connections} "
              "connections, in the bench process (wrk not found: apt-get install wrk)")
    return [Result(
        name, "pairs/s", statistics.median(rates["callgate"]),
        statistics.median(rates["bare"]), "bare Starlette, same routes", 0.5,
        notes=[
            f"one pair = POST /v1/calls + DELETE of that call; median of "
            f"{budget.http_rounds} interleaved rounds; load: {driver}",
            f"callgate: callgate serve --config <roomy stack> --store memory:// --host {HOST} "
            f"--port <free> (its defaults: log level info, a decision line per call, no "
            f"access line; {decisions:,} decision lines logged)",
            f"bare: python -m uvicorn --factory bench.http_target:bare_app --host {HOST} "
            f"--port <free> --http httptools --loop uvloop (uvicorn's defaults: an access "
            f"line per request; {access:,} logged)",
            f"stack: example layers, caps raised to {HTTP_CAP:,} and trunk max_cps to "
            f"{HTTP_CPS:,} so nothing blocks on the wall clock (windows kept); memory store",
            "latency per request, median round: callgate "
            f"{_median_latency(runs['callgate'])}; bare {_median_latency(runs['bare'])}",
        ],
        rounds=rates,
    )]


def _median_latency(rounds: list[Round]) -> str:
    return (f"p50 {statistics.median(r.p50_ms for r in rounds):.2f} ms, "
            f"p99 {statistics.median(r.p99_ms for r in rounds):.2f} ms")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    from bench.run import main

    sys.exit(main(["--only", "http", *sys.argv[1:]]))
