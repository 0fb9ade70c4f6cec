"""The global cap: a burst is cut to a few notifications plus one summary that counts the rest."""

from __future__ import annotations

from tunewatch.plugins.alert_messages import Alert
from tunewatch.plugins.notify.throttle import Throttle


def alert(title: str, critical: bool = False) -> Alert:
    return Alert(title=title, body="b", kind="anomaly", critical=critical)


def test_alerts_under_the_cap_are_sent_at_once() -> None:
    throttle = Throttle(limit=3, window_s=60)
    assert [throttle.offer(alert(f"a{i}"), now=i) for i in range(3)] == [True, True, True]
    assert throttle.flush_at() is None


def test_the_rest_of_a_burst_is_held_and_summarised_when_the_window_ends() -> None:
    throttle = Throttle(limit=2, window_s=60)
    sent = [throttle.offer(alert(f"a{i}"), now=10 + i) for i in range(5)]
    assert sent == [True, True, False, False, False]
    assert throttle.flush_at() == 70
    assert throttle.due(now=69) is None
    summary = throttle.due(now=70)
    assert summary is not None
    assert summary.title == "3 more alerts"
    assert summary.body == "a2; a3; a4. See `tunewatch events`."
    assert not summary.critical
    assert throttle.flush_at() is None


def test_held_critical_alerts_make_the_summary_critical_and_are_named_first() -> None:
    throttle = Throttle(limit=1, window_s=60)
    throttle.offer(alert("first"), now=0)
    for i in range(4):
        throttle.offer(alert(f"minor {i}"), now=1)
    throttle.offer(alert("Training diverged: run-b", critical=True), now=2)
    summary = throttle.due(now=60)
    assert summary is not None
    assert summary.critical
    assert summary.title == "5 more alerts (1 critical)"
    assert summary.body.startswith("Training diverged: run-b; minor 0; minor 1; and 2 more.")


def test_the_summary_counts_against_the_next_window() -> None:
    throttle = Throttle(limit=2, window_s=60)
    for i in range(3):
        throttle.offer(alert(f"a{i}"), now=0)
    assert throttle.due(now=60) is not None
    assert throttle.offer(alert("next"), now=61)
    assert not throttle.offer(alert("one too many"), now=62)


def test_a_quiet_spell_starts_a_fresh_window() -> None:
    throttle = Throttle(limit=1, window_s=60)
    assert throttle.offer(alert("a"), now=0)
    assert throttle.offer(alert("b"), now=100)


def test_drain_summarises_what_is_held_right_away() -> None:
    throttle = Throttle(limit=1, window_s=60)
    throttle.offer(alert("a"), now=0)
    throttle.offer(alert("b", critical=True), now=1)
    summary = throttle.drain()
    assert summary is not None and summary.critical and summary.title == "1 more alert (1 critical)"
    assert throttle.drain() is None


def test_a_limit_of_zero_means_no_cap() -> None:
    throttle = Throttle(limit=0, window_s=60)
    assert all(throttle.offer(alert(f"a{i}"), now=0) for i in range(100))
