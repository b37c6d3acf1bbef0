"""Real Redis servers for tests: one standalone server and one 3-master cluster on 127.0.0.1.

Servers are started on free ports in a temporary directory, without persistence, and
waited for with a bounded poll (PING, ``cluster info``). The two shared servers start
lazily, once per test process, and are stopped by the session fixtures in
``tests/conftest.py`` (or at exit). Without ``redis-server`` the tests that need one are
skipped, except under CI (``CI`` set), where they fail: CI installs Redis.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

STARTUP_S = 15.0


def missing() -> str | None:
    """Why real Redis tests cannot run here, or None when they can."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH (apt-get install redis-server)"
    return None


def require() -> None:
    """Skip the calling test without Redis; fail instead under CI, which must run them."""
    why = missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Redis tests: {why}")
        pytest.skip(why)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 50_000)
        if _is_free(port) and _is_free(port + 10_000):
            return port
    raise OSError("no free port pair (p, p + 10000) found for a cluster node")


def wait_until(check: Callable[[], object], what: str, timeout_s: float = STARTUP_S) -> None:
    """Poll ``check()`` until it is truthy (errors count as not yet), at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.02)
    raise TimeoutError(f"{what} not ready within {timeout_s} s (last error: {last})")


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 (no persistence); stop and start it again."""

    def __init__(self, port: int | None = None, *extra: str) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="callgate-redis-"))
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1.0)
        try:
            wait_until(lambda: self._alive() and client.ping(), f"redis-server :{self.port}")
        finally:
            client.close()
        return self

    def _alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise OSError(f"redis-server :{self.port} exited")
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2.0, decode_responses=True)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisClusterServer:
    """Three masters, no replicas, slots spread by ``redis-cli --cluster create``."""

    def __init__(self) -> None:
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> RedisClusterServer:
        for _ in range(3):
            node = RedisServer(free_cluster_port(), "--cluster-enabled", "yes",
                               "--cluster-config-file", "nodes.conf",
                               "--cluster-node-timeout", "2000")
            self.nodes.append(node.start())
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0",
             "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=STARTUP_S,
        )
        for node in self.nodes:
            client = node.client()
            try:
                wait_until(_cluster_ok(client), f"cluster node :{node.port}")
            finally:
                client.close()
        return self

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


def _cluster_ok(client: redis.Redis) -> Callable[[], bool]:
    return lambda: "cluster_state:ok" in str(client.execute_command("CLUSTER", "INFO"))


_shared: dict[str, RedisServer | RedisClusterServer] = {}


def shared_url() -> str:
    """The URL of this process's standalone server (started on first use)."""
    require()
    if "standalone" not in _shared:
        _shared["standalone"] = RedisServer().start()
    return _shared["standalone"].url


def shared_cluster_url() -> str:
    """The URL of this process's 3-master cluster (started on first use)."""
    require()
    if "cluster" not in _shared:
        server = RedisClusterServer()
        try:
            _shared["cluster"] = server.start()
        except BaseException:
            server.cleanup()
            raise
    return _shared["cluster"].url


def stop_shared() -> None:
    for server in _shared.values():
        with contextlib.suppress(Exception):
            server.cleanup()
    _shared.clear()


atexit.register(stop_shared)
