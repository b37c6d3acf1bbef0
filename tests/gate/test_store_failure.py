"""A store that cannot be reached gives an explicit decision under the configured policy."""

from __future__ import annotations

import ast
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import stack_from
from tests.gate.stacks import BASE, N1

from callgate import gate as gate_module
from callgate.gate import Gate
from callgate.model import Call, Layer, Outcome, Reason, RenewStatus
from callgate.stores import SqliteStore
from callgate.testing import FakeClock


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold SQLite's write lock from another connection, as a stuck writer would."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def in_use(gate: Gate, layer: str, scope: str) -> int:
    rows = gate.usage()["layers"]
    return next(int(r["in_use"]) for r in rows if (r["layer"], r["scope"]) == (layer, scope))


def gate_on(path: Path, text: str) -> Gate:
    stack = stack_from(text)
    return Gate(stack, SqliteStore(path, Gate.limits_for(stack), busy_timeout_s=0.05), FakeClock())


def test_locked_store_rejects_with_store_unavailable(tmp_path: Path) -> None:
    """With on_store_error = reject, a store that cannot answer gives rejected/store_unavailable."""
    gate = gate_on(tmp_path / "g.db", BASE)
    with locked(tmp_path / "g.db"):
        decision = gate.acquire(Call("c1", "inbound", N1))
    assert (decision.outcome, decision.layer, decision.reason) == (
        Outcome.REJECTED, Layer.STORE, Reason.STORE_UNAVAILABLE)
    assert decision.retry_after_s and decision.message
    assert gate.acquire(Call("c2", "inbound", N1)).outcome is Outcome.ADMITTED  # recovered


def test_admit_local_admits_a_fraction_of_each_cap_in_process(tmp_path: Path) -> None:
    """With admit_local, calls are admitted under local_fraction of every cap, then refused."""
    text = BASE.replace('tombstone_ttl = "60s"', 'tombstone_ttl = "60s"\n'
                        'on_store_error = "admit_local"\nlocal_fraction = 0.5')
    gate = gate_on(tmp_path / "g.db", text)
    with locked(tmp_path / "g.db"):
        first = gate.acquire(Call("c1", "inbound", N1))
        second = gate.acquire(Call("c2", "inbound", N1))
        assert gate.release("c1").released  # a local lease is released locally
    assert (first.outcome, first.reason) == (Outcome.ADMITTED, Reason.ADMITTED_LOCAL)
    assert (second.outcome, second.reason) == (Outcome.REJECTED, Reason.STORE_UNAVAILABLE)


def test_admit_local_keeps_at_least_one_of_each_cap_and_window(tmp_path: Path) -> None:
    """A fraction that would round a small cap or window to zero still admits one, never raises."""
    text = BASE.replace('tombstone_ttl = "60s"', 'tombstone_ttl = "60s"\n'
                        'on_store_error = "admit_local"').replace(
        "[trunks.t1]\nmax_concurrent = 4", "[trunks.t1]\nmax_concurrent = 4\nmax_cps = 5")
    gate = gate_on(tmp_path / "g.db", text)
    with locked(tmp_path / "g.db"):
        first = gate.acquire(Call("c1", "inbound", N1))
        second = gate.acquire(Call("c2", "inbound", N1))
    assert first.reason is Reason.ADMITTED_LOCAL
    assert second.reason is Reason.STORE_UNAVAILABLE


ADMIT_LOCAL = BASE.replace('tombstone_ttl = "60s"', 'tombstone_ttl = "60s"\n'
                           'on_store_error = "admit_local"\nlocal_fraction = 0.5')


def test_a_local_call_is_renewed_and_released_locally_while_the_store_is_back(
    tmp_path: Path,
) -> None:
    """A call admitted locally stays local: renew and release find it by call id, even after
    the store answers again, and release it exactly once."""
    gate = gate_on(tmp_path / "g.db", ADMIT_LOCAL)
    with locked(tmp_path / "g.db"):
        assert gate.acquire(Call("c1", "inbound", N1)).reason is Reason.ADMITTED_LOCAL
    assert gate.renew("c1").status is RenewStatus.RENEWED
    assert gate.renew("c1", account="acme").status is RenewStatus.RENEWED
    assert gate.release("c1", account="other").released is False  # not that account's call
    assert gate.release("c1").released
    assert gate.release("c1").released is False
    assert in_use(gate, "number", N1) == 0  # the shared store never counted it


def test_a_local_lease_that_expires_is_forgotten(tmp_path: Path) -> None:
    """A local lease nobody renews expires like any lease; its call id is then the store's."""
    gate = gate_on(tmp_path / "g.db", ADMIT_LOCAL)
    clock = gate.clock
    assert isinstance(clock, FakeClock)
    with locked(tmp_path / "g.db"):
        gate.acquire(Call("c1", "inbound", N1))
    clock.advance(31)
    gate.expire()
    assert gate.renew("c1").status is RenewStatus.UNKNOWN
    assert gate.acquire(Call("c1", "inbound", N1)).reason is Reason.ADMITTED  # in the store


def test_switching_admit_local_off_keeps_the_local_calls_until_they_end(tmp_path: Path) -> None:
    """A reload to on_store_error = reject refuses new local admissions; calls already local
    are still renewed and released where they live."""
    gate = gate_on(tmp_path / "g.db", ADMIT_LOCAL)
    with locked(tmp_path / "g.db"):
        gate.acquire(Call("c1", "inbound", N1))
    gate.reload(stack_from(BASE))
    with locked(tmp_path / "g.db"):
        refused = gate.acquire(Call("c2", "inbound", N1))
        assert gate.renew("c1").status is RenewStatus.RENEWED
        assert gate.release("c1").released
    assert refused.reason is Reason.STORE_UNAVAILABLE


def test_the_gate_knows_stores_only_by_their_contract() -> None:
    """gate.py imports no store backend (memory, SQLite, Redis): only the contract and the
    fallback wrapper, so every store is used the same way."""
    source = Path(gate_module.__file__).read_text()
    imported = {node.module for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.ImportFrom) and node.module}
    assert {m for m in imported if m.startswith("callgate.stores")} == {
        "callgate.stores.base", "callgate.stores.fallback"}


def test_local_admissions_from_many_threads_keep_the_local_caps_and_all_end(
    tmp_path: Path,
) -> None:
    """Threads taking, renewing and releasing local calls at once: no more than the local
    account cap (3 x 0.5 -> 1) is ever held, and every local call ends with no slot left."""
    gate = gate_on(tmp_path / "g.db", ADMIT_LOCAL)
    held = [0]
    peak = [0]
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(6):
            decision = gate.acquire(Call(f"w{n}-{i}", "inbound", N1))
            if decision.reason is not Reason.ADMITTED_LOCAL:
                continue
            with lock:
                held[0] += 1
                peak[0] = max(peak[0], held[0])
            assert gate.renew(f"w{n}-{i}").status is RenewStatus.RENEWED
            with lock:
                held[0] -= 1
            assert gate.release(f"w{n}-{i}").released

    with locked(tmp_path / "g.db"):
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert peak[0] == 1
    assert gate.acquire(Call("after", "inbound", N1)).reason is Reason.ADMITTED  # store back
    assert gate.renew("w0-0").status is not RenewStatus.RENEWED  # nothing local lingers
