"""The SIP edge: calls/s SIPp can push through ``callgate sip`` against SIPp to SIPp directly.

    .venv/bin/python bench/bench_sip.py            # rates 50 .. 400 calls/s (~1.5 min)
    .venv/bin/python bench/bench_sip.py --quick    # rates 25 .. 100, figures rougher

Two SIPp agents (``bench/sip_uas.xml``: 180, 200, waits for BYE) run for the whole
benchmark, one for the direct calls and one behind the edge. At each rate, in the same run
and interleaved, SIPp's built-in ``uac`` (INVITE, ACK, a 100 ms call, BYE) places
``rate x seconds`` calls

- **directly** to the agent (the baseline: what SIPp and this machine can do),
- **through the edge** (``callgate sip`` on a SQLite store; the number's cap of 50, the
  one that binds (trunk and plan have ten times more), sits above the offered concurrency,
  rate x call length, until the edge falls behind and calls last longer), which answers
  100, asks the gate, forwards the INVITE as a B2BUA, renews and releases the lease.
  Calls over the cap are refused (486), and count as failed, and
- **through Debian's kamailio** where it is installed (``apt-get install kamailio``),
  forwarding every request statelessly to the direct agent with one UDP worker (one
  core, like the edge's one event loop): what a C SIP proxy that keeps no state costs.

A rate is *held* when every call succeeded (no failed call, no timeout) and the run ended
within 1.5x its nominal length. The figure is the highest rate held by each, and the ratio
edge / direct. The peak concurrency of the agent behind the edge (SIPp's ``CurrentCall``,
sampled every second) is printed against the cap: the gate must never let more calls reach
it than the cap.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# bench/ runs as a script: put the checkout on the path so `bench.*` imports.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine

NUMBER = "+14155550100"
CAP = 50  # the number's cap: above every offered concurrency here (rate x call length)
CALL_MS = 100
AGENT = Path(__file__).resolve().parent / "sip_uas.xml"


@dataclass
class Step:
    """One SIPp caller run at one rate."""

    rate: int
    calls: int
    successful: int
    failed: int
    seconds: float
    held: bool
    why: str = ""  # the first error SIPp reported, for a rate not held


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stack_text(db: Path) -> str:
    return f"""
[gate]
store = "sqlite:///{db}"
[trunks.main]
max_concurrent = {CAP * 10}
[plans.basic]
max_concurrent = {CAP * 10}
[accounts.acme]
plan = "basic"
[numbers."{NUMBER}"]
account = "acme"
trunk = "main"
max_concurrent = {CAP}
[inbound]
queue_max = 0
"""


def run_caller(target: str, rate: int, seconds: float, work: Path, tag: str) -> Step:
    calls = int(rate * seconds)
    stats = work / f"caller-{tag}-{rate}.csv"
    errors = work / f"caller-{tag}-{rate}-errors.log"
    command = ["sipp", target, "-sn", "uac", "-s", NUMBER.lstrip("+"), "-i", "127.0.0.1",
               "-p", str(free_udp_port()), "-r", str(rate), "-m", str(calls),
               "-d", str(CALL_MS), "-nostdin", "-timeout", f"{seconds * 3 + 10:g}s",
               "-recv_timeout", "5000", "-trace_stat", "-stf", str(stats),
               "-trace_err", "-error_file", str(errors)]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=work, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - started
    successful, failed = _final_counts(stats)
    held = (proc.returncode == 0 and successful == calls and failed == 0
            and elapsed <= seconds * 1.5 + 1.0)
    why = ""
    if not held and errors.exists():
        lines = [line for line in errors.read_text(errors="replace").splitlines()
                 if "Aborting" in line or "Timeout" in line or "failed" in line.lower()]
        why = " | ".join(lines[:2])[:400]
    return Step(rate, calls, successful, failed, elapsed, held, why)


def _final_counts(stats: Path) -> tuple[int, int]:
    if not stats.exists():
        return 0, 0
    with stats.open(encoding="utf-8", errors="replace") as file:
        rows = list(csv.DictReader(file, delimiter=";"))
    if not rows:
        return 0, 0
    last = rows[-1]
    return int(last.get("SuccessfulCall(C)", 0) or 0), int(last.get("FailedCall(C)", 0) or 0)


def peak_current_calls(stats: Path) -> int:
    if not stats.exists():
        return 0
    with stats.open(encoding="utf-8", errors="replace") as file:
        return max((int(row.get("CurrentCall", 0) or 0)
                    for row in csv.DictReader(file, delimiter=";")), default=0)


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20.0,
               what: str = "callgate sip") -> None:
    """Until the edge answers an OPTIONS (it is listening and its store is open)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.2)
            mine = sock.getsockname()[1]
            sock.sendto((f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
                         f"Via: SIP/2.0/UDP 127.0.0.1:{mine};branch=z9hG4bK{time.time_ns()}\r\n"
                         f"From: <sip:b@127.0.0.1>;tag=b\r\nTo: <sip:ping@127.0.0.1>\r\n"
                         f"Call-ID: bench{time.time_ns()}\r\nCSeq: 1 OPTIONS\r\n"
                         "Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
            try:
                if sock.recv(4096).startswith(b"SIP/2.0 200"):
                    return
            except OSError:
                continue
    raise SystemExit(f"{what} did not start")


KAMAILIO_CFG = """#!KAMAILIO
# bench/bench_sip.py: a stateless forwarder, one UDP worker, no dialog or transaction state.
debug=1
log_stderror=yes
children=1
listen=udp:127.0.0.1:{port}
mpath="{modules}"
loadmodule "pv.so"
loadmodule "sl.so"
loadmodule "maxfwd.so"
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if ($rm == "OPTIONS" && $rU == "ping") {{ sl_send_reply("200", "OK"); exit; }}
    $du = "sip:127.0.0.1:{agent}";
    forward();
}}
"""


def kamailio_modules() -> Path | None:
    """Where Debian's kamailio keeps its modules (the config must name the directory)."""
    candidates = [*sorted(Path("/usr/lib").glob("*/kamailio/modules")),
                  Path("/usr/lib/kamailio/modules")]
    for path in candidates:
        if (path / "sl.so").exists():
            return path
    return None


def start_kamailio(work: Path, port: int, agent_port: int) -> subprocess.Popen[bytes] | None:
    """kamailio forwarding statelessly to the agent, or None (and why) when not installed."""
    modules = kamailio_modules()
    if shutil.which("kamailio") is None or modules is None:
        print("kamailio is not installed (apt-get install kamailio): no comparison with a "
              "stateless SIP proxy this run")
        return None
    config = work / "kamailio.cfg"
    config.write_text(KAMAILIO_CFG.format(port=port, modules=modules, agent=agent_port),
                      encoding="utf-8")
    proc = subprocess.Popen(["kamailio", "-f", str(config), "-DD", "-E", "-Y", str(work),
                             "-P", str(work / "kamailio.pid")],
                            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, proc, what="kamailio")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        raise SystemExit("sipp not found (apt-get install sip-tester)")
    rates = [25, 50, 100] if args.quick else [50, 100, 150, 200, 300, 400]
    seconds = 3.0 if args.quick else 5.0
    with tempfile.TemporaryDirectory(prefix="callgate-bench-sip-") as tmp:
        work = Path(tmp)
        db = work / "gate.db"
        config = work / "stack.toml"
        config.write_text(stack_text(db), encoding="utf-8")
        agent_port, gated_port, edge_port = free_udp_port(), free_udp_port(), free_udp_port()
        kamailio_port = free_udp_port()
        agent_stats = work / "agent.csv"
        agents = [subprocess.Popen(
            ["sipp", "-sf", str(AGENT), "-i", "127.0.0.1", "-p", str(port), "-nostdin",
             *(["-trace_stat", "-stf", str(agent_stats), "-fd", "1"] if gated else [])],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for port, gated in ((agent_port, False), (gated_port, True))]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}
        edge = subprocess.Popen(
            [sys.executable, "-m", "callgate.cli", "sip", "--config", str(config),
             "--listen", f"127.0.0.1:{edge_port}", "--forward",
             f"sip:agent@127.0.0.1:{gated_port}", "--log-level", "warning"],
            cwd=work, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kamailio = None
        try:
            wait_ready(edge_port, edge)
            kamailio = start_kamailio(work, kamailio_port, agent_port)
            direct: list[Step] = []
            through: list[Step] = []
            proxied: list[Step] = []
            for rate in rates:
                direct.append(run_caller(f"127.0.0.1:{agent_port}", rate, seconds, work,
                                         "direct"))
                through.append(run_caller(f"127.0.0.1:{edge_port}", rate, seconds, work,
                                          "edge"))
                line = (f"{rate:>4} calls/s offered: direct {_line(direct[-1])}; "
                        f"edge {_line(through[-1])}")
                if kamailio is not None:
                    proxied.append(run_caller(f"127.0.0.1:{kamailio_port}", rate, seconds,
                                              work, "kamailio"))
                    line += f"; kamailio {_line(proxied[-1])}"
                print(line, flush=True)
        finally:
            running = [p for p in (edge, kamailio, *agents) if p is not None]
            for proc in running:
                proc.terminate()
            for proc in running:
                proc.wait(timeout=20)
        peak = peak_current_calls(agent_stats)
    best_direct = max((s.rate for s in direct if s.held), default=0)
    best_edge = max((s.rate for s in through if s.held), default=0)
    cores = os.cpu_count() or 1
    print(f"\nmachine: {machine()}")
    print(f"calls/s held with zero failed calls ({CALL_MS} ms calls, SQLite store):")
    print(f"  SIPp -> SIPp directly:         {best_direct:>4} calls/s"
          + (" (the highest rate tried)" if best_direct == rates[-1] else ""))
    print(f"  SIPp -> callgate sip -> SIPp:  {best_edge:>4} calls/s"
          f" ({best_edge / cores:.0f} per core on {cores} cores)")
    if proxied:
        best_kamailio = max((s.rate for s in proxied if s.held), default=0)
        print(f"  SIPp -> kamailio -> SIPp:      {best_kamailio:>4} calls/s"
              " (stateless, one worker)"
              + (" (the highest rate tried)" if best_kamailio == rates[-1] else ""))
    ratio = best_edge / best_direct if best_direct else float("nan")
    print(f"  ratio edge / direct:           {ratio:.2f}x")
    if proxied:
        k_ratio = best_edge / best_kamailio if best_kamailio else float("nan")
        print(f"  ratio edge / kamailio:         {k_ratio:.2f}x")
    print(f"peak concurrency at the agent (sampled each second): {peak} (cap {CAP})"
          + ("  ABOVE THE CAP" if peak > CAP else ""))


def _line(step: Step) -> str:
    return (f"{step.successful}/{step.calls} ok, {step.failed} failed, {step.seconds:.1f} s"
            + ("" if step.held else f" (not held: {step.why or 'too slow'})"))


if __name__ == "__main__":
    main()
