"""How `status` names what a run is doing: finished, stalled, inactive, or its trainer's word."""

from __future__ import annotations

import time

import pytest

from tunewatch.daemon.run_status import RunStatus


def run(status: str | None, silent_s: float | None) -> RunStatus:
    now = time.time()
    return RunStatus(
        name="r",
        path="/r",
        status=status,
        step=10,
        total_steps=100,
        loss=1.0,
        eval_loss=None,
        accuracy=None,
        last_metric_time=None if silent_s is None else now - silent_s,
        seconds_since_last_metric=silent_s,
        points=10,
        source_errors=0,
        last_error=None,
        files=[],
    )


@pytest.mark.parametrize(
    ("status", "silent_s", "state"),
    [
        ("training", 60.0, "training"),
        ("completed", 5 * 3600.0, "completed"),  # finished is finished, however long ago
        ("training", 40 * 60.0, "stalled since "),
        ("training", 3 * 3600.0, "inactive since "),
        (None, 60.0, "training"),  # points coming, no status file
        (None, None, "unknown"),
    ],
)
def test_a_run_that_stopped_is_not_said_to_be_training(
    status: str | None, silent_s: float | None, state: str
) -> None:
    assert run(status, silent_s).state.startswith(state)
