"""``callgate sip`` end to end: SIPp as the caller and as the agent, over UDP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.sip import sipp

pytestmark = pytest.mark.slow

NUMBER = "+14155550100"
WAIT_S = 20.0


def stack_toml(db: Path, *, number_cap: int = 1, queue_max: int = 5, max_wait: str = "20s",
               forward_timeout: str = "32s", codes: str = "", lease_ttl: str = "30s",
               max_call_duration: str = "2h", trunk_cap: int = 10,
               session_expires: str = "30m") -> str:
    return f"""
[gate]
store = "sqlite:///{db}"
lease_ttl = "{lease_ttl}"
max_call_duration = "{max_call_duration}"

[trunks.main]
max_concurrent = {trunk_cap}

[plans.basic]
max_concurrent = 10

[accounts.acme]
plan = "basic"

[numbers."{NUMBER}"]
account = "acme"
trunk = "main"
max_concurrent = {number_cap}

[inbound]
queue_max = {queue_max}
max_wait = "{max_wait}"
retry_after = "45s"

[sip]
forward_timeout = "{forward_timeout}"
session_expires = "{session_expires}"
{codes}
"""


@dataclass
class Rig:
    """A running edge, where its agent listens, and a view of the shared store."""

    edge: sipp.Edge
    agent_port: int
    directory: Path
    config: Path
    db: Path
    started: list[sipp.Sipp] = field(default_factory=list)

    def usage(self) -> dict[str, Any]:
        from callgate.clock import system_clock
        from callgate.config import load_stack
        from callgate.gate import Gate
        from callgate.stores import SqliteStore

        stack = load_stack(self.config)
        store = SqliteStore(self.db, Gate.limits_for(stack))
        try:
            usage: dict[str, Any] = Gate(stack, store, system_clock).usage()
            return usage
        finally:
            store.close()

    def expire(self) -> bool:
        """Run one expiry sweep on the shared store (what a running gate's reaper does)."""
        from callgate.clock import system_clock
        from callgate.config import load_stack
        from callgate.gate import Gate
        from callgate.stores import SqliteStore

        stack = load_stack(self.config)
        store = SqliteStore(self.db, Gate.limits_for(stack))
        try:
            Gate(stack, store, system_clock).expire()
        finally:
            store.close()
        return False

    def in_use(self) -> int:
        layers = self.usage()["layers"]
        return int(next(row["in_use"] for row in layers if row["scope"] == NUMBER))

    def queued(self) -> int:
        layers = self.usage()["layers"]
        return int(next(row["queued"] for row in layers if row["scope"] == NUMBER))

    def until(self, what: str, predicate: Any) -> None:
        """Poll the store (a real process changes it) until ``predicate()``, with a deadline."""
        deadline = time.monotonic() + WAIT_S
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not happen within {WAIT_S} s:\n{self.edge.output()}")
            time.sleep(0.05)  # polling real processes, with a deadline

    def agent(self, scenario: Path, *, calls: int = 1, args: tuple[str, ...] = ()) -> sipp.Sipp:
        agent = sipp.start_sipp("agent", scenario, self.directory, port=self.agent_port,
                                calls=calls, args=args)
        self.started.append(agent)
        return agent

    def caller(self, scenario: Path, *, name: str = "caller",
               args: tuple[str, ...] = ()) -> sipp.Sipp:
        caller = sipp.start_sipp(name, scenario, self.directory, port=sipp.free_udp_port(),
                                 target=f"127.0.0.1:{self.edge.port}",
                                 args=("-s", NUMBER.lstrip("+"), *args))
        self.started.append(caller)
        return caller

    def scenario(self, name: str, **replace: str) -> Path:
        return sipp.scenario(name, self.directory, **replace)

    def releases(self) -> list[str]:
        return re.findall(r"released \((\w+)\)", self.edge.output())


@contextlib.contextmanager
def rig_for(tmp_path: Path, extra: tuple[str, ...] = (), **stack: Any) -> Iterator[Rig]:
    """An edge for a stack with ``stack``'s settings, SIPp's agent port, the store's view."""
    sipp.require()
    db = tmp_path / "gate.db"
    config = tmp_path / "stack.toml"
    config.write_text(stack_toml(db, **stack), encoding="utf-8")
    agent_port = sipp.free_udp_port()
    with sipp.edge(config, db, tmp_path, forward=f"sip:agent@127.0.0.1:{agent_port}",
                   extra=extra) as edge:
        rig = Rig(edge, agent_port, tmp_path, config, db)
        try:
            yield rig
        finally:
            for process in rig.started:  # a failed test leaves no SIPp behind
                process.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with rig_for(tmp_path) as running:
        yield running


def ok(run: sipp.SippRun, calls: int = 1) -> None:
    assert run.returncode == 0 and run.successful == calls, run.describe()


def test_admitted_call_forwarded_and_released_once_when_the_caller_hangs_up(rig: Rig) -> None:
    """An admitted INVITE reaches the agent with X-Callgate-Call-Id; the caller's BYE frees it."""
    agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml")
    ok(rig.caller(sipp.SCENARIOS / "uac_caller_bye.xml", args=("-d", "300")).wait())
    ok(agent.wait())
    rig.until("the release", lambda: rig.in_use() == 0)
    assert rig.releases() == ["caller_bye"]
    assert rig.usage()["leases"] == 0


def test_agent_hang_up_releases_the_lease_once(rig: Rig) -> None:
    """A BYE from the agent is relayed to the caller and frees the lease exactly once."""
    agent = rig.agent(sipp.SCENARIOS / "uas_bye.xml", args=("-d", "300"))
    ok(rig.caller(sipp.SCENARIOS / "uac_agent_bye.xml").wait())
    ok(agent.wait())
    rig.until("the release", lambda: rig.in_use() == 0)
    assert rig.releases() == ["agent_bye"]


def test_the_lease_is_held_while_the_dialog_lives(rig: Rig) -> None:
    """During an answered call the number's slot is taken; after the BYE it is free."""
    agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml")
    caller = rig.caller(sipp.SCENARIOS / "uac_caller_bye.xml", args=("-d", "2000"))
    rig.until("the admission", lambda: rig.in_use() == 1)
    ok(caller.wait())
    ok(agent.wait())
    rig.until("the release", lambda: rig.in_use() == 0)


def test_queued_caller_hears_182_then_is_forwarded_when_a_slot_frees(rig: Rig) -> None:
    """A second caller on a full number gets 182 Queued with its position, then the agent."""
    agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml", calls=2)
    first = rig.caller(sipp.SCENARIOS / "uac_caller_bye.xml", name="first", args=("-d", "1500"))
    rig.until("the first admission", lambda: rig.in_use() == 1)
    second = rig.caller(sipp.SCENARIOS / "uac_queued.xml", name="second", args=("-d", "200"))
    ok(first.wait())
    ok(second.wait())
    ok(agent.wait(), calls=2)
    rig.until("both releases", lambda: rig.in_use() == 0)
    assert "(promoted)" in rig.edge.output()
    assert sorted(rig.releases()) == ["caller_bye", "caller_bye"]


def test_cancel_while_queued_leaves_the_queue(rig: Rig) -> None:
    """A queued caller's CANCEL gets 200 + 487 and takes it out of the number's queue."""
    agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml")
    first = rig.caller(sipp.SCENARIOS / "uac_caller_bye.xml", name="first", args=("-d", "3000"))
    rig.until("the first admission", lambda: rig.in_use() == 1)
    ok(rig.caller(sipp.SCENARIOS / "uac_cancel_queued.xml", name="second").wait())
    assert rig.queued() == 0 and rig.in_use() == 1
    ok(first.wait())
    ok(agent.wait())
    rig.until("the release", lambda: rig.in_use() == 0)
    assert sorted(rig.releases()) == ["caller_bye", "caller_cancel"]


def test_retransmitted_invite_takes_one_slot_and_reaches_the_agent_once(rig: Rig) -> None:
    """A retransmitted INVITE is absorbed; the same Call-ID on a new branch gets 482."""
    agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml", args=("-d", "1000"))  # answers late
    ok(rig.caller(sipp.SCENARIOS / "uac_retransmit.xml", args=("-d", "300")).wait())
    ok(agent.wait())
    rig.until("the release", lambda: rig.in_use() == 0)
    assert rig.edge.output().count(": admitted at") == 1
    assert rig.releases() == ["caller_bye"]


@pytest.mark.parametrize(("agent_code", "caller_code"), [(486, 480), (500, 500), (503, 500)])
def test_agent_failure_is_relayed_as_480_or_500_never_503(
        rig: Rig, agent_code: int, caller_code: int) -> None:
    """The agent's own failure reaches the caller as 480/500 and frees the lease."""
    agent = rig.agent(rig.scenario("uas_fail.xml", code=str(agent_code)))
    ok(rig.caller(rig.scenario("uac_failed.xml", code=str(caller_code))).wait())
    ok(agent.wait())
    rig.until("the release", lambda: rig.in_use() == 0)
    assert rig.releases() == [f"agent_{agent_code}"]


def test_refused_call_gets_486_with_retry_after_and_the_deciding_layer(tmp_path: Path) -> None:
    """A full number with no room to queue answers 486, Retry-After 45, queue / queue_full."""
    with rig_for(tmp_path, queue_max=0) as rig:
        agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml")
        first = rig.caller(sipp.SCENARIOS / "uac_caller_bye.xml", name="first",
                           args=("-d", "2000"))
        rig.until("the first admission", lambda: rig.in_use() == 1)
        refused = rig.scenario("uac_refused.xml", code="486", retry="45", layer="number",
                               reason="queue_full")
        ok(rig.caller(refused, name="second").wait())
        assert rig.in_use() == 1
        ok(first.wait())
        ok(agent.wait())


def test_full_trunk_is_refused_with_503_and_retry_after(tmp_path: Path) -> None:
    """A full trunk with no room to queue answers 503, Retry-After 45, trunk / queue_full."""
    with rig_for(tmp_path, queue_max=0, trunk_cap=1, number_cap=2) as rig:
        agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml")
        first = rig.caller(sipp.SCENARIOS / "uac_caller_bye.xml", name="first",
                           args=("-d", "2000"))
        rig.until("the first admission", lambda: rig.in_use() == 1)
        refused = rig.scenario("uac_refused.xml", code="503", retry="45", layer="trunk",
                               reason="queue_full")
        ok(rig.caller(refused, name="second").wait())
        assert rig.in_use() == 1
        ok(first.wait())
        ok(agent.wait())


def test_refusal_codes_are_configurable(tmp_path: Path) -> None:
    """[sip.codes] queue_full = 480 changes the final answer of a refused call."""
    with rig_for(tmp_path, queue_max=0, codes="[sip.codes]\nqueue_full = 480") as rig:
        first = rig.caller(sipp.SCENARIOS / "uac_caller_bye.xml", name="first",
                           args=("-d", "2000"))
        agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml")
        rig.until("the first admission", lambda: rig.in_use() == 1)
        refused = rig.scenario("uac_refused.xml", code="480", retry="45", layer="number",
                               reason="queue_full")
        ok(rig.caller(refused, name="second").wait())
        ok(first.wait())
        ok(agent.wait())


def test_queued_past_max_wait_is_refused(tmp_path: Path) -> None:
    """A caller still on hold after max_wait gets 486 queue_timeout and leaves the queue."""
    with rig_for(tmp_path, max_wait="1s") as rig:
        agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml")
        first = rig.caller(sipp.SCENARIOS / "uac_caller_bye.xml", name="first",
                           args=("-d", "4000"))
        rig.until("the first admission", lambda: rig.in_use() == 1)
        refused = rig.scenario("uac_refused.xml", code="486", retry="[0-9]+", layer=".+",
                               reason="queue_timeout")
        ok(rig.caller(refused, name="second").wait())
        assert rig.queued() == 0
        ok(first.wait())
        ok(agent.wait())


def test_agent_that_never_answers_is_cancelled_after_forward_timeout(tmp_path: Path) -> None:
    """No answer within forward_timeout: the edge CANCELs the agent, answers 480, releases."""
    with rig_for(tmp_path, forward_timeout="1s") as rig:
        agent = rig.agent(sipp.SCENARIOS / "uas_silent.xml")
        ok(rig.caller(rig.scenario("uac_failed.xml", code="480")).wait())
        ok(agent.wait())
        rig.until("the release", lambda: rig.in_use() == 0)
        assert rig.releases() == ["agent_timeout"]


def test_unknown_dialog_requests_and_malformed_sip_change_nothing(rig: Rig) -> None:
    """A BYE for no dialog gets 481, a stray ACK nothing, garbage 400; the live call holds."""
    agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml")
    caller = rig.caller(sipp.SCENARIOS / "uac_caller_bye.xml", args=("-d", "2500"))
    rig.until("the admission", lambda: rig.in_use() == 1)
    ok(rig.caller(sipp.SCENARIOS / "uac_stray.xml", name="stray").wait())
    assert sipp.send_raw(rig.edge.port, sipp.MALFORMED_INVITE).startswith(b"SIP/2.0 400")
    assert rig.in_use() == 1 and rig.queued() == 0
    ok(caller.wait())
    ok(agent.wait())
    rig.until("the release", lambda: rig.in_use() == 0)
    assert rig.releases() == ["caller_bye"]


def test_the_edge_renews_the_lease_of_a_call_longer_than_its_ttl(tmp_path: Path) -> None:
    """A 3 s call on a 1 s lease TTL keeps its slot to the caller's BYE (heartbeats)."""
    with rig_for(tmp_path, lease_ttl="1s") as rig:
        agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml")
        ok(rig.caller(sipp.SCENARIOS / "uac_caller_bye.xml", args=("-d", "3000")).wait())
        ok(agent.wait())
        rig.until("the release", lambda: rig.in_use() == 0)
        assert rig.releases() == ["caller_bye"]
        assert rig.usage()["expired_total"] == 0


def test_max_call_duration_hangs_up_both_legs(tmp_path: Path) -> None:
    """At max_call_duration the edge sends BYE to the caller and to the agent, and releases."""
    with rig_for(tmp_path, max_call_duration="2s") as rig:
        agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml")
        ok(rig.caller(sipp.SCENARIOS / "uac_agent_bye.xml").wait())  # the BYE comes to it
        ok(agent.wait())  # and to the agent
        rig.until("the release", lambda: rig.in_use() == 0)
        # Whichever the edge sees first: its own timer, or the gate capping the lease.
        assert rig.releases() in (["max_call_duration"], ["lease_lost"])


def test_metrics_count_the_edge_decisions(tmp_path: Path) -> None:
    """--metrics-port serves Prometheus text with the SIP edge's decisions counted."""
    import httpx
    from tests.served import free_port

    port = free_port()
    with rig_for(tmp_path, extra=("--metrics-port", str(port))) as rig:
        agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml")
        ok(rig.caller(sipp.SCENARIOS / "uac_caller_bye.xml", args=("-d", "200")).wait())
        ok(agent.wait())
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0).text
    assert re.search(r'callgate_decisions_total\{[^}]*outcome="admitted"[^}]*\} 1\.0', text), text
    assert "callgate_slots_in_use" in text


def test_after_an_edge_crash_live_leases_expire_within_one_ttl(tmp_path: Path) -> None:
    """SIGKILL mid-call: nothing renews the lease, so the gate frees the slot after a TTL."""
    with rig_for(tmp_path, lease_ttl="1s") as rig:
        agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml")
        caller = rig.caller(sipp.SCENARIOS / "uac_caller_bye.xml", args=("-d", "30000"))
        rig.until("the admission", lambda: rig.in_use() == 1)
        rig.edge.proc.kill()
        rig.edge.proc.wait()
        rig.until("the lease's expiry", lambda: rig.expire() or rig.in_use() == 0)
        assert rig.usage()["expired_total"] == 1
        caller.stop()
        agent.stop()
