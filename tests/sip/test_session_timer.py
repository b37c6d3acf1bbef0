"""RFC 4028 negotiation on each leg: intervals, who refreshes, when, and which headers."""

from __future__ import annotations

import pytest

from callgate.sip.session_timer import (
    MIN_SE_S,
    LegTimer,
    SessionExpires,
    SessionTimerError,
    TooSmall,
    for_agent,
    for_caller,
    parse,
    supports_timer,
)


def test_parse_reads_seconds_and_refresher() -> None:
    """``1800;refresher=UAC`` is 1800 s by the UAC; a bare number names no refresher."""
    assert parse(" 1800 ; refresher=UAC") == SessionExpires(1800, "uac")
    assert parse("90") == SessionExpires(90, None)
    assert parse(None) is None


@pytest.mark.parametrize("value", ["soon", "-5", "90;refresher=proxy", ""])
def test_parse_refuses_what_is_not_delta_seconds(value: str) -> None:
    """A Session-Expires that is not delta-seconds[;refresher=uac|uas] is an error naming it."""
    with pytest.raises(SessionTimerError, match=r"expected delta-seconds|uac or uas"):
        parse(value)


def test_supports_timer_reads_the_option_tags() -> None:
    """``Supported: 100rel, Timer`` lists timer; ``timers`` or none does not."""
    assert supports_timer("100rel, Timer")
    assert not supports_timer("timers") and not supports_timer(None)


def test_caller_below_min_se_gets_422() -> None:
    """Session-Expires under 90 s: 422 with our Min-SE (RFC 4028 9)."""
    assert for_caller("60", None, "timer", 1800) == TooSmall(MIN_SE_S)


def test_caller_naming_itself_refresher_refreshes() -> None:
    """The caller's refresher=uac is honoured, its interval kept when under ours."""
    timer = for_caller("600;refresher=uac", None, "timer", 1800)
    assert timer == LegTimer(600, edge_refreshes=False, peer_supports=True)


def test_caller_interval_is_lowered_to_ours_but_not_below_its_min_se() -> None:
    """3600 asked, 1800 configured: 1800; with Min-SE 2400 the caller's floor wins."""
    lowered = for_caller("3600", None, "timer", 1800)
    assert isinstance(lowered, LegTimer) and lowered.interval_s == 1800
    floored = for_caller("3600", "2400", "timer", 1800)
    assert isinstance(floored, LegTimer) and floored.interval_s == 2400


def test_caller_with_timers_and_no_choice_refreshes_itself() -> None:
    """Supported: timer without a refresher: the caller (uac) refreshes, at our interval."""
    assert for_caller(None, None, "timer", 1800) == LegTimer(1800, edge_refreshes=False)


def test_caller_without_timers_is_refreshed_by_the_edge() -> None:
    """No Supported: timer: the caller cannot refresh, so the edge does (refresher=uas)."""
    timer = for_caller("900;refresher=uac", None, None, 1800)
    assert timer == LegTimer(900, edge_refreshes=True, peer_supports=False)


def test_agent_without_session_expires_is_refreshed_by_the_edge() -> None:
    """A 2xx without Session-Expires: the edge refreshes at the interval it offered (7.2)."""
    assert for_agent(None, 1800) == LegTimer(1800, edge_refreshes=True, peer_supports=False)


@pytest.mark.parametrize(("answer", "edge"), [("1200;refresher=uas", False),
                                              ("1200;refresher=uac", True)])
def test_agent_answer_names_the_refresher(answer: str, edge: bool) -> None:
    """The agent's refresher=uas means it refreshes; uac means the edge (the UAC) does."""
    assert for_agent(answer, 1800) == LegTimer(1200, edge_refreshes=edge)


def test_refresh_at_half_the_interval_and_expiry_before_its_end() -> None:
    """Refresh at S/2; without one, end at S - min(32, S/3) (RFC 4028 10)."""
    assert (LegTimer(90, True).refresh_in_s, LegTimer(90, False).expire_in_s) == (45, 60)
    assert LegTimer(1800, False).expire_in_s == 1768


def test_refresher_in_headers_depends_on_who_sends_them() -> None:
    """uac is the sender of the request: the edge refreshing says uac in its requests and
    uas in its answers; the peer refreshing the other way round."""
    edge = LegTimer(90, edge_refreshes=True)
    peer = LegTimer(90, edge_refreshes=False)
    assert (edge.header(in_request=True), edge.header(in_request=False)) == (
        "90;refresher=uac", "90;refresher=uas")
    assert (peer.header(in_request=True), peer.header(in_request=False)) == (
        "90;refresher=uas", "90;refresher=uac")
    assert dict(peer.headers(in_request=False)) == {
        "Session-Expires": "90;refresher=uac", "Require": "timer", "Supported": "timer"}
    assert dict(edge.headers(in_request=True))["Min-SE"] == "90"


def test_a_peer_refresh_may_change_interval_and_refresher() -> None:
    """A refresh naming refresher=uas hands refreshing to the edge; no header changes nothing."""
    timer = LegTimer(1800, edge_refreshes=False)
    timer.refreshed_by_peer(None)
    assert timer == LegTimer(1800, edge_refreshes=False)
    timer.refreshed_by_peer(SessionExpires(600, "uas"))
    assert timer == LegTimer(600, edge_refreshes=True)
