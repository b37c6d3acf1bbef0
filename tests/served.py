"""`callgate serve` as a real process for tests: a free loopback port, bounded start and stop."""

from __future__ import annotations

import os
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


@dataclass
class Served:
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
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"serve did not exit within {STOP_TIMEOUT_S} s of SIGTERM:\n"
                        + self.output())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def served(config: Path, db: Path, log: Path, *, time_scale: float = 1.0,
           env: Mapping[str, str] | None = None, log_level: str = "info",
           reaper_interval_s: float = 0.2, args: Sequence[str] = ()) -> Iterator[Served]:
    """Serve ``config`` on SQLite file ``db`` until the block ends (then SIGTERM, bounded)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}
    environ.update(env or {})
    for _ in range(3):  # another process may take the free port before the server binds it
        port = free_port()
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "callgate.cli", "serve", "--config", str(config),
                 "--store", f"sqlite:///{db}", "--port", str(port), "--time-scale",
                 str(time_scale), "--reaper-interval", str(reaper_interval_s),
                 "--log-level", log_level, *args],
                stdout=out, stderr=subprocess.STDOUT, env=environ)
        server = Served(proc, f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + START_TIMEOUT_S
        ready = False
        while time.monotonic() < deadline and proc.poll() is None and not ready:
            try:
                ready = httpx.get(f"{server.url}/readyz", timeout=1.0).status_code == 200
            except httpx.TransportError:
                time.sleep(0.05)  # polling a real process, with a deadline
        if ready:
            try:
                yield server
            finally:
                if proc.poll() is None:
                    server.stop()
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            pytest.fail(f"serve was not ready within {START_TIMEOUT_S} s:\n{server.output()}")
        if "address already in use" not in server.output().lower():
            pytest.fail(f"serve exited with {proc.returncode}:\n{server.output()}")
    pytest.fail("could not find a free port for serve in 3 tries")


@contextmanager
def served_app(app: object) -> Iterator[str]:
    """Serve an ASGI ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yields its URL."""
    import threading

    import uvicorn

    port = free_port()
    # ws="none" as `serve` has it: no WebSocket routes, no websockets import (whose legacy
    # module warns under the oldest uvicorn callgate allows).
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,  # type: ignore[arg-type]
                                           log_level="error", ws="none"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail("the in-thread server did not start")
            time.sleep(0.02)  # polling a real server, with a deadline
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
