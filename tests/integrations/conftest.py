"""A gate served on a loopback port (memory store, fake clock) for the framework adapters."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from tests.served import served_app

from callgate.config import parse_stack
from callgate.gate import Gate
from callgate.service.app import create_app
from callgate.testing import FakeClock, memory_gate

N = "+14155550100"  # two lines
FULL = "+14155550101"  # one line

STACK = f"""
[gate]
lease_ttl = "30s"
store = "memory://"

[trunks.t]
max_concurrent = 10

[plans.p]
max_concurrent = 10

[accounts.acme]
plan = "p"

[numbers."{N}"]
account = "acme"
trunk = "t"
max_concurrent = 2

[numbers."{FULL}"]
account = "acme"
trunk = "t"
max_concurrent = 1

[providers.llm]
keys = ["key-a", "key-b"]
sessions_per_key = 4
"""


@dataclass
class Served:
    gate: Gate
    clock: FakeClock
    url: str

    def in_use(self, number: str = N) -> int:
        return next(int(row["in_use"]) for row in self.gate.usage()["layers"]
                    if row["layer"] == "number" and row["scope"] == number)


@pytest.fixture
def served_gate() -> Iterator[Served]:
    clock = FakeClock()
    gate = memory_gate(parse_stack(tomllib.loads(STACK)), clock)
    with served_app(create_app(gate)) as url:
        yield Served(gate, clock, url)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
