"""The headroom page's per-process counters: rates, totals and the layer refusing most."""

from __future__ import annotations

from callgate.service.activity import RATE_WINDOW_S, Activity
from callgate.testing import FakeClock


def test_rates_count_the_recent_seconds_by_outcome_and_refusing_layer() -> None:
    """Ten seconds of answers give per-second rates by outcome and by the layer that refused."""
    clock = FakeClock()
    activity = Activity(clock)
    for _ in range(10):
        clock.advance(1.0)
        for _ in range(3):
            activity.count("acme", "admitted", "number")
        activity.count("acme", "queued", "number")
        activity.count("acme", "retry_later", "window")
        activity.roll()
    summary = activity.summary()
    assert summary["rate_window_s"] == RATE_WINDOW_S
    assert summary["rates"]["by_outcome"] == {
        "admitted": 3.0, "queued": 1.0, "retry_later": 1.0, "rejected": 0.0}
    assert summary["rates"]["refused_by_layer"] == {"number": 1.0, "window": 1.0}
    assert summary["totals"]["by_outcome"]["admitted"] == 30


def test_old_seconds_leave_the_rate_but_stay_in_the_totals() -> None:
    """Answers older than the rate window count in the totals only."""
    clock = FakeClock()
    activity = Activity(clock)
    activity.count("acme", "rejected", "account")
    clock.advance(1.0)
    activity.roll()
    clock.advance(60.0)
    activity.roll()
    summary = activity.summary()
    assert summary["rates"]["by_outcome"]["rejected"] == 0.0
    assert summary["totals"]["by_outcome"]["rejected"] == 1
    assert summary["totals"]["refused_by_layer"] == {"account": 1}


def test_answers_not_yet_filed_are_counted_already() -> None:
    """A summary between two rolls includes the answers of the current column."""
    clock = FakeClock()
    activity = Activity(clock)
    clock.advance(2.0)
    activity.count("acme", "admitted", "number")
    summary = activity.summary()
    assert summary["totals"]["by_outcome"]["admitted"] == 1
    assert summary["rates"]["by_outcome"]["admitted"] == 0.5


def test_the_top_refusing_layer_is_per_window() -> None:
    """The last 5 minutes and the last hour can name different layers."""
    clock = FakeClock(start=1_800_000_000.0)
    activity = Activity(clock)
    for _ in range(5):  # 40 minutes ago: the provider layer refused five calls
        activity.count("acme", "retry_later", "provider")
    clock.advance(1.0)
    activity.roll()
    clock.advance(40 * 60.0)
    for _ in range(2):  # just now: the number layer refused two
        activity.count("acme", "queued", "number")
    activity.count("acme", "admitted", "number")  # admitted: not a refusal
    clock.advance(1.0)
    activity.roll()
    top = activity.summary()["top_refusing"]
    assert top == {"300": {"layer": "number", "refusals": 2},
                   "3600": {"layer": "provider", "refusals": 5}}
    clock.advance(2 * 3600.0)
    activity.roll()
    assert activity.summary()["top_refusing"] == {"300": None, "3600": None}


def test_an_account_sees_only_its_own_answers() -> None:
    """summary(account) counts that account's calls only; None counts every account."""
    clock = FakeClock()
    activity = Activity(clock)
    activity.count("acme", "admitted", "number")
    activity.count("globex", "rejected", "account")
    activity.count("globex", "rejected", "account")
    clock.advance(1.0)
    activity.roll()
    assert activity.summary("acme")["totals"] == {
        "by_outcome": {"admitted": 1, "queued": 0, "retry_later": 0, "rejected": 0},
        "refused_by_layer": {}}
    assert activity.summary("acme")["top_refusing"]["300"] is None
    assert activity.summary()["totals"]["by_outcome"]["rejected"] == 2


def test_a_summary_before_any_time_passed_has_zero_rates() -> None:
    """With no time elapsed the rates are zero, not a division by zero."""
    activity = Activity(FakeClock())
    activity.count("acme", "admitted", "number")
    summary = activity.summary()
    assert summary["rate_window_s"] == 0.0
    assert summary["rates"]["by_outcome"]["admitted"] == 0.0
    assert summary["started"] == summary["now"]
