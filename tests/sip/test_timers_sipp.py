"""The edge's own SIP timers with SIPp: RFC 4028 session timers on both legs, 182 re-sends.

The edge runs with the hidden ``--time-scale``: its protocol timers run faster than the
headers say (a 90 s session, RFC 4028's minimum, lasts 9 s at 0.1), so the RFC's numbers
are kept on the wire and ``session_expires`` still cannot be set below 90 s. At 0.1 the side
that refreshes does so after 4.5 s; the other side ends the call after 6 s without one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.sip import sipp
from tests.sip.test_edge_sipp import ok, rig_for

pytestmark = pytest.mark.slow

SCALE = ("--time-scale", "0.1")


def test_refreshes_by_the_refreshers_the_caller_and_agent_chose_keep_the_call(
        tmp_path: Path) -> None:
    """Caller (re-INVITE, UPDATE) and agent (UPDATE) refresh as they chose: 7.5 s call lives."""
    with rig_for(tmp_path, extra=SCALE) as rig:
        agent = rig.agent(sipp.SCENARIOS / "uas_timer_refreshes.xml")
        ok(rig.caller(sipp.SCENARIOS / "uac_timer_refreshes.xml").wait())
        ok(agent.wait())
        rig.until("the release", lambda: rig.in_use() == 0)
        assert rig.releases() == ["caller_bye"]


def test_a_missed_refresh_ends_both_legs_and_releases_once(tmp_path: Path) -> None:
    """The caller never refreshes: BYE to caller and agent, released once (session_expired).

    The agent has no session timers, so the edge refreshes the agent's leg itself first
    (a re-INVITE with refresher=uac, which the agent's scenario requires).
    """
    with rig_for(tmp_path, extra=SCALE) as rig:
        agent = rig.agent(sipp.SCENARIOS / "uas_timer_none.xml")
        ok(rig.caller(sipp.SCENARIOS / "uac_timer_silent.xml").wait())
        ok(agent.wait())
        rig.until("the release", lambda: rig.in_use() == 0)
        assert rig.releases() == ["session_expired"]
        assert rig.usage()["expired_total"] == 0  # released by the edge, not by the TTL


def test_the_edge_refreshes_a_caller_and_an_agent_without_timers(tmp_path: Path) -> None:
    """Neither end supports timers: the edge re-INVITEs both legs and the call lives on."""
    with rig_for(tmp_path, extra=SCALE, session_expires="90s") as rig:
        agent = rig.agent(sipp.SCENARIOS / "uas_timer_none.xml")
        ok(rig.caller(sipp.SCENARIOS / "uac_timer_refreshed.xml", args=("-d", "500")).wait())
        ok(agent.wait())
        rig.until("the release", lambda: rig.in_use() == 0)
        assert rig.releases() == ["caller_bye"]


def test_session_expires_below_min_se_is_refused_422_without_a_slot(tmp_path: Path) -> None:
    """Session-Expires: 60 gets 422 with Min-SE: 90 before the gate is asked."""
    with rig_for(tmp_path) as rig:
        ok(rig.caller(sipp.SCENARIOS / "uac_timer_too_small.xml").wait())
        assert rig.in_use() == 0 and rig.queued() == 0
        assert ": admitted at" not in rig.edge.output()


def test_an_agent_422_is_retried_once_with_its_min_se(tmp_path: Path) -> None:
    """The agent answers 422 Min-SE: 120 to an offer of 90 s; the edge re-offers 120 s once."""
    with rig_for(tmp_path, session_expires="90s") as rig:
        agent = rig.agent(sipp.SCENARIOS / "uas_timer_422.xml", calls=2)
        ok(rig.caller(sipp.SCENARIOS / "uac_caller_bye.xml", args=("-d", "300")).wait())
        ok(agent.wait(), calls=2)  # the 422 and the answered INVITE
        rig.until("the release", lambda: rig.in_use() == 0)
        assert rig.releases() == ["caller_bye"]
        assert rig.edge.output().count(": admitted at") == 1


def test_queued_182_is_re_sent_with_the_same_position(tmp_path: Path) -> None:
    """A caller on hold hears 182 again without a change in position (every 60 s, scaled)."""
    with rig_for(tmp_path, extra=("--time-scale", "0.03")) as rig:  # a re-send every 1.8 s
        agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml", calls=2)
        first = rig.caller(sipp.SCENARIOS / "uac_caller_bye.xml", name="first",
                           args=("-d", "4500"))
        rig.until("the first admission", lambda: rig.in_use() == 1)
        second = rig.caller(rig.scenario("uac_queued_twice.xml", first="1", second="1"),
                            name="second", args=("-d", "200"))
        ok(first.wait())
        ok(second.wait())
        ok(agent.wait(), calls=2)
        rig.until("both releases", lambda: rig.in_use() == 0)


def test_queued_182_is_re_sent_when_the_position_changes(tmp_path: Path) -> None:
    """Third in line hears position 2, then 1 as soon as the caller ahead hangs up."""
    with rig_for(tmp_path) as rig:  # unscaled: no periodic re-send within this test
        agent = rig.agent(sipp.SCENARIOS / "uas_answer.xml", calls=2)
        first = rig.caller(sipp.SCENARIOS / "uac_caller_bye.xml", name="first",
                           args=("-d", "5000"))
        rig.until("the first admission", lambda: rig.in_use() == 1)
        second = rig.caller(sipp.SCENARIOS / "uac_cancel_queued_later.xml", name="second",
                            args=("-d", "2000"))
        rig.until("the second in the queue", lambda: rig.queued() == 1)
        third = rig.caller(rig.scenario("uac_queued_twice.xml", first="2", second="1"),
                           name="third", args=("-d", "200"))
        ok(second.wait())
        ok(first.wait())
        ok(third.wait())
        ok(agent.wait(), calls=2)
        rig.until("every release", lambda: rig.in_use() == 0)
        assert sorted(rig.releases()) == ["caller_bye", "caller_bye", "caller_cancel"]
