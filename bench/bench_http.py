"""HTTP: ``POST /v1/calls`` + ``DELETE /v1/calls/{id}`` against a bare Starlette app.

Both apps run under the same uvicorn command (one process each, 127.0.0.1, log level
warning, no access log) and take the same load from :mod:`bench.loadgen`, in
interleaved rounds. The callgate app is the real API on a memory store and the system
clock; the stack is the example's layers with caps and trunk CPS raised so that nothing
blocks on the wall clock (windows stay on). Every POST is checked to be admitted.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT, Budget, Result
from bench.http_target import HTTP_CAP, HTTP_CPS
from bench.loadgen import LoadResult, run_load
from bench.stacks import roomy_stack, trunk_lines

HOST = "127.0.0.1"
APP_MODULE = ROOT / "src" / "callgate" / "service" / "app.py"
Progress = Callable[[str], None]


class ServerError(RuntimeError):
    """A benchmark server did not start or died; the message carries its stderr."""


@dataclass
class Server:
    target: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def uvicorn_command(target: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "--factory", f"bench.http_target:{target}",
            "--host", HOST, "--port", str(port), "--log-level", "warning", "--no-access-log"]


def _wait_ready(server: Server, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerError(f"{server.target} exited with {server.process.returncode}:\n"
                              f"{server.stderr()}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, server.port), 0.5):
            return
        time.sleep(0.05)  # polling a real server's port, bounded by the deadline
    raise ServerError(f"{server.target} did not listen on {HOST}:{server.port} within "
                      f"{deadline_s:g} s:\n{server.stderr()}")


@contextlib.contextmanager
def serve(target: str, workdir: Path, startup_s: float = 30.0) -> Iterator[Server]:
    """Run ``bench.http_target:<target>`` under uvicorn until the block ends."""
    port = free_port()
    log = workdir / f"{target}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    with log.open("wb") as sink:
        process = subprocess.Popen(uvicorn_command(target, port), cwd=ROOT, env=env,
                                   stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
    server = Server(target, port, process, log)
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


def _summary(results: list[LoadResult]) -> str:
    latencies = LoadResult(0, 1.0, tuple(x for r in results for x in r.latencies_s))
    p50, p99 = latencies.percentile(0.5), latencies.percentile(0.99)
    return f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms"


def bench_http(budget: Budget, progress: Progress) -> list[Result]:
    name = "http POST + DELETE /v1/calls"
    if not APP_MODULE.exists():
        return [Result(name, "pairs/s", None, None, "bare Starlette, same routes", 0.5,
                       notes=[f"skipped: {APP_MODULE.relative_to(ROOT)} does not exist yet"],
                       status="skipped")]
    lines, _ = trunk_lines(roomy_stack(HTTP_CAP, HTTP_CPS))
    runs: dict[str, list[LoadResult]] = {"callgate": [], "bare": []}
    with tempfile.TemporaryDirectory(prefix="callgate-http-") as tmp, \
            serve("callgate_app", Path(tmp)) as gate_server, \
            serve("bare_app", Path(tmp)) as bare_server:
        servers = {"callgate": gate_server, "bare": bare_server}
        for side, server in servers.items():  # warm-up, untimed
            run_load(HOST, server.port, f"warm-{side}", lines, 50, budget.http_workers)
        for index in range(budget.http_rounds):
            for side, server in servers.items():
                try:
                    runs[side].append(run_load(HOST, server.port, f"r{index}-{side}", lines,
                                               budget.http_pairs, budget.http_workers))
                except Exception as exc:
                    raise ServerError(f"{side} failed under load: {exc}\n"
                                      f"{server.stderr()}") from exc
            progress(f"round {index + 1}/{budget.http_rounds}: " + ", ".join(
                f"{s} {r[-1].rate:,.0f} pairs/s" for s, r in runs.items()))
    rates = {side: [r.rate for r in results] for side, results in runs.items()}
    parts = [("uvloop" if importlib.util.find_spec("uvloop") else "asyncio") + " loop",
             ("httptools" if importlib.util.find_spec("httptools") else "h11") + " parser"]
    return [Result(
        name, "pairs/s", max(rates["callgate"]), max(rates["bare"]),
        "bare Starlette, same routes", 0.5,
        notes=[
            f"one pair = POST /v1/calls (checked admitted) + DELETE; {budget.http_pairs} pairs "
            f"per round over {budget.http_workers} keep-alive connections, best of "
            f"{budget.http_rounds} interleaved rounds; raw-asyncio client in the bench process",
            "servers: python -m uvicorn --factory bench.http_target:<app> --host 127.0.0.1 "
            f"--port <free> --log-level warning --no-access-log ({', '.join(parts)})",
            f"stack: example layers, caps raised to {HTTP_CAP:,} and trunk max_cps to "
            f"{HTTP_CPS:,} so nothing blocks on the wall clock (windows kept); memory store",
            f"latency per pair: callgate {_summary(runs['callgate'])}; "
            f"bare {_summary(runs['bare'])}",
        ],
        rounds=rates,
    )]
