"""stall: the status says training, but no metric arrives or the trainer process is gone."""

from __future__ import annotations

import pytest

from tunewatch.plugins.anomaly.config import AnomalyConfig
from tunewatch.plugins.anomaly.stall import StallCheck

NOW = 1_700_000_000.0
MINUTE = 60.0


def check() -> StallCheck:
    return StallCheck(AnomalyConfig(stall_minutes=30.0))


def test_no_metric_for_longer_than_the_limit_while_training_is_a_stall() -> None:
    finding = check().check(NOW, NOW - 45 * MINUTE, "training", 1234, True, last_step=800)
    assert finding is not None
    assert (finding.kind, finding.severity, finding.metric) == (
        "stall",
        "critical",
        "minutes_since_metric",
    )
    assert finding.value == pytest.approx(45.0)
    assert finding.expected == 30.0
    assert finding.step == 800
    assert "45 minutes" in finding.detail


def test_a_recent_metric_is_not_a_stall() -> None:
    assert check().check(NOW, NOW - 29 * MINUTE, "training", 1234, True) is None


@pytest.mark.parametrize("status", ["completed", "failed", "stopped", None])
def test_a_run_that_is_not_training_cannot_stall(status: str | None) -> None:
    assert check().check(NOW, NOW - 600 * MINUTE, status, 1234, False) is None


def test_a_vanished_trainer_process_is_a_stall_at_once() -> None:
    finding = check().check(NOW, NOW - 1.0, "training", 4321, False, last_step=12)
    assert finding is not None
    assert (finding.metric, finding.value, finding.step) == ("pid", 4321.0, 12)
    assert "4321 is gone" in finding.detail


def test_an_unknown_pid_or_liveness_only_uses_the_silence() -> None:
    assert check().check(NOW, NOW - 1.0, "training", None, None) is None
    assert check().check(NOW, NOW - 1.0, "training", 4321, None) is None
    assert check().check(NOW, NOW - 31 * MINUTE, "running", None, None) is not None


def test_a_run_that_never_logged_is_waited_for() -> None:
    # Loading a large model can take long; only a dead process says something is wrong.
    assert check().check(NOW, None, "training", 4321, True) is None


def test_zero_minutes_or_a_disabled_kind_switch_it_off() -> None:
    silent = StallCheck(AnomalyConfig(stall_minutes=0.0))
    assert silent.check(NOW, NOW - 999 * MINUTE, "training", None, None) is None
    disabled = StallCheck(AnomalyConfig(disabled_kinds=("stall",)))
    assert disabled.check(NOW, NOW - 999 * MINUTE, "training", 1, False) is None
