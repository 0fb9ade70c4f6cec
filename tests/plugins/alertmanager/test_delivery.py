"""Retrying an unreachable Alertmanager: exponential backoff, an outage told once."""

from __future__ import annotations

from tunewatch.plugins.alertmanager.delivery import DeliveryState


def test_failures_back_off_exponentially_up_to_the_maximum() -> None:
    state = DeliveryState(retry_s=5.0, retry_max_s=60.0)
    delays = []
    for _ in range(6):
        state.failed("connection refused", 100.0)
        delays.append(state.next_delay(resend_s=30.0))
    assert delays == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]


def test_an_outage_is_reported_once_and_its_end_resets_the_backoff() -> None:
    state = DeliveryState(retry_s=5.0, retry_max_s=60.0)
    assert state.failed("connection refused", 100.0) is True
    assert state.failed("connection refused", 105.0) is False
    assert state.down_for(130.0) == 30.0
    state.succeeded(130.0)
    assert state.ok and state.down_for(131.0) is None
    assert state.next_delay(resend_s=30.0) == 30.0
    assert state.failed("HTTP 500", 200.0) is True  # a new outage is told again


def test_an_outage_goes_on_across_a_restart() -> None:
    before = DeliveryState(retry_s=5.0, retry_max_s=60.0)
    before.failed("connection refused", 100.0)
    after = DeliveryState(retry_s=5.0, retry_max_s=60.0)
    after.resume(before.to_json())
    assert after.failed("connection refused", 150.0) is False  # not told again
    assert after.down_for(160.0) == 60.0
