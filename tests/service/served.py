"""`callgate serve` as a real process for tests: started on a free port, waited for, stopped.

The server runs ``python -m callgate.cli serve`` with this interpreter, its output in a log
file the test can read; readiness is a bounded poll of ``/readyz``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


# running servers ------------------------------------------------------------------------
@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for_output(self, text: str, timeout_s: float = 20.0) -> str:
        """The log once it contains ``text`` (a bounded poll of a real process's output)."""
        deadline = time.monotonic() + timeout_s
        while True:
            output = self.output()
            if text in output:
                return output
            if time.monotonic() > deadline or self.proc.poll() is not None:
                pytest.fail(f"serve did not log {text!r} within {timeout_s} s:\n{output}")
            time.sleep(0.05)  # polling a real process, with a deadline

    def stop(self) -> int:
        """SIGTERM, then the exit code (the server must drain and exit in bounded time)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"serve did not exit within {STOP_TIMEOUT_S} s of SIGTERM:\n"
                        + self.output())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(config: Path, db: Path, log: Path, extra_env: Mapping[str, str] | None = None,
           args: Sequence[str] = ()) -> Server:
    """Start `callgate serve` and wait (bounded) until /readyz answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}
    env.update(extra_env or {})
    for _ in range(3):  # another process may take the free port before the server binds it
        port = _free_port()
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "callgate.cli", "serve", "--config", str(config),
                 "--store", f"sqlite:///{db}", "--port", str(port), "--log-level", "warning",
                 "--reaper-interval", "0.5", *args],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        server = Server(proc, f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{server.url}/readyz", timeout=1.0).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling a real process, with a deadline
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            pytest.fail(f"serve was not ready within {START_TIMEOUT_S} s:\n{server.output()}")
        if "address already in use" not in server.output().lower():
            pytest.fail(f"serve exited with {proc.returncode}:\n{server.output()}")
    pytest.fail("could not find a free port for serve in 3 tries")


@contextmanager
def running(config: Path, db: Path, log: Path, extra_env: Mapping[str, str] | None = None,
            args: Sequence[str] = ()) -> Iterator[Server]:
    """A served gate on ``config`` with the SQLite file ``db``; killed if still running after."""
    server = _start(config, db, log, extra_env, args)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
