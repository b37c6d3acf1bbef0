"""SIPp and ``callgate sip`` as real processes on 127.0.0.1 UDP, bounded in time.

Without ``sipp`` on PATH (Debian's ``sip-tester``) or without sippy the SIP tests skip,
except under CI (``CI`` set), where they fail: CI installs both. Nothing is created
before that check, so a skip leaves no temporary file or socket behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCENARIOS = Path(__file__).parent / "scenarios"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
SIPP_TIMEOUT_S = 40.0


def missing() -> str | None:
    """Why SIPp tests cannot run here, or None when they can."""
    if shutil.which("sipp") is None:
        return "sipp not found on PATH (apt-get install sip-tester)"
    if importlib.util.find_spec("sippy") is None:
        return "sippy is not installed (pip install 'callgate[sip]')"
    return None


def require() -> None:
    """Skip the calling test without SIPp; fail instead under CI, which must run them."""
    why = missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the SIP tests: {why}")
        pytest.skip(why)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scenario(name: str, directory: Path, **replace: str) -> Path:
    """A scenario file, with ``__KEY__`` placeholders replaced (written to ``directory``)."""
    path = SCENARIOS / name
    if not replace:
        return path
    text = path.read_text(encoding="utf-8")
    for key, value in replace.items():
        text = text.replace(f"__{key.upper()}__", value)
    out = directory / f"{path.stem}-{'-'.join(replace.values())}.xml"
    out.write_text(text, encoding="utf-8")
    return out


@dataclass
class SippRun:
    """One finished SIPp run: exit code, calls that succeeded and failed, its output."""

    returncode: int
    successful: int
    failed: int
    output: str
    errors: str = ""

    def describe(self) -> str:
        return (f"sipp exited {self.returncode} ({self.successful} ok, {self.failed} failed)"
                f"\n{self.errors[-3000:]}\n{self.output[-1500:]}")


_COUNT = re.compile(r"(Successful|Failed) call\s*\|\s*\d+\s*\|\s*(\d+)")


@dataclass
class Sipp:
    """A SIPp process (caller or agent) started with :func:`start_sipp`."""

    proc: subprocess.Popen[bytes]
    log: Path
    error_file: Path

    def wait(self, timeout_s: float = SIPP_TIMEOUT_S) -> SippRun:
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = -9
        output = self.log.read_text(encoding="utf-8", errors="replace")
        counts = {kind: int(n) for kind, n in _COUNT.findall(output)}
        errors = (self.error_file.read_text(encoding="utf-8", errors="replace")
                  if self.error_file.exists() else "")
        return SippRun(code, counts.get("Successful", 0), counts.get("Failed", 0), output, errors)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_sipp(name: str, scenario_file: Path, directory: Path, *, port: int,
               target: str | None = None, calls: int = 1, args: Sequence[str] = ()) -> Sipp:
    """Start SIPp: a caller when ``target`` (host:port) is given, else an agent on ``port``."""
    log = directory / f"sipp-{name}.out"
    error_file = directory / f"sipp-{name}-errors.log"
    command = ["sipp", *([target] if target else []), "-sf", str(scenario_file),
               "-i", "127.0.0.1", "-p", str(port), "-m", str(calls), "-nostdin",
               "-trace_err", "-error_file", str(error_file), "-timeout", f"{SIPP_TIMEOUT_S:g}s",
               *args]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                cwd=directory)
    return Sipp(proc, log, error_file)


def call(scenario_file: Path, directory: Path, edge_port: int, *, number: str,
         calls: int = 1, args: Sequence[str] = (), name: str = "caller") -> SippRun:
    """Run a SIPp caller against the edge to the end."""
    caller = start_sipp(name, scenario_file, directory, port=free_udp_port(),
                        target=f"127.0.0.1:{edge_port}", calls=calls,
                        args=["-s", number, *args])
    return caller.wait()


@dataclass
class Edge:
    """A running ``callgate sip``."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    stopped: bool = field(default=False)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"callgate sip did not stop within {STOP_TIMEOUT_S} s:\n{self.output()}")


def _options_answered(port: int) -> bool:
    """Does something answer a SIP OPTIONS on 127.0.0.1:port (the edge's keep-alive)?"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.2)
        mine = sock.getsockname()[1]
        probe = (f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
                 f"Via: SIP/2.0/UDP 127.0.0.1:{mine};branch=z9hG4bK-probe{time.monotonic_ns()}\r\n"
                 f"From: <sip:probe@127.0.0.1:{mine}>;tag=probe\r\n"
                 f"To: <sip:ping@127.0.0.1:{port}>\r\n"
                 f"Call-ID: probe-{time.monotonic_ns()}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\n"
                 "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        sock.sendto(probe.encode(), ("127.0.0.1", port))
        try:
            data = sock.recv(4096)
        except OSError:
            return False
        return data.startswith(b"SIP/2.0 200")


@contextlib.contextmanager
def edge(config: Path, db: Path, directory: Path, *, forward: str | None,
         extra: Sequence[str] = ()) -> Iterator[Edge]:
    """Run ``callgate sip`` for ``config`` on SQLite ``db`` until the block ends."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}
    log = directory / "edge.log"
    for _ in range(3):  # another process may take the free port first
        port = free_udp_port()
        command = [sys.executable, "-m", "callgate.cli", "sip", "--config", str(config),
                   "--store", f"sqlite:///{db}", "--listen", f"127.0.0.1:{port}",
                   *(["--forward", forward] if forward else []), *extra]
        with log.open("ab") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environ)
        running = Edge(proc, port, log)
        deadline = time.monotonic() + START_TIMEOUT_S
        ready = False
        while time.monotonic() < deadline and proc.poll() is None and not ready:
            ready = _options_answered(port)
        if ready:
            try:
                yield running
            finally:
                if not running.stopped:
                    running.stop()
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            pytest.fail(f"callgate sip was not ready within {START_TIMEOUT_S} s:\n"
                        + running.output())
        if "address already in use" not in running.output().lower():
            pytest.fail(f"callgate sip exited with {proc.returncode}:\n{running.output()}")
    pytest.fail("could not find a free UDP port for callgate sip in 3 tries")


MALFORMED_INVITE = (
    "INVITE sip:+14155550100@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-malformed\r\n"
    "From: <sip:bad@127.0.0.1>;tag=bad\r\nTo: <sip:+14155550100@127.0.0.1>\r\n"
    "Call-ID: malformed@127.0.0.1\r\nCSeq: not-a-number INVITE\r\n"
    "Contact: <sip:bad@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)
"""An INVITE whose CSeq is not a number (``{port}``: where the answer should go)."""


def send_raw(port: int, template: str, timeout_s: float = 5.0) -> bytes:
    """Send one datagram (``template`` with ``{port}`` = ours) to the edge; its first answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout_s)
        mine = sock.getsockname()[1]
        sock.sendto(template.format(port=mine).encode(), ("127.0.0.1", port))
        try:
            return sock.recv(4096)
        except OSError:
            return b""
