"""stall: the status says the run is training, but nothing moves.

Not driven by points (a stalled run sends none): the plugin calls `StallCheck.check` on a
timer with what it knows of the run. Two conditions, both critical:
- no new metric for `stall_minutes` (a hung dataloader, a deadlocked collective, a full disk);
- the trainer's PID is gone (killed by the OOM killer, a crash that never updated the status).
"""

from __future__ import annotations

from tunewatch.plugins.anomaly.base import Finding
from tunewatch.plugins.anomaly.config import AnomalyConfig

KIND = "stall"
# Status words meaning "the trainer should be producing metrics now" (statuses are lower-case).
TRAINING_STATUSES = frozenset({"training", "running", "in_progress", "started"})
# The metric names of the two conditions, so each can be alerted and resolved on its own.
SILENCE_METRIC = "minutes_since_metric"
PID_METRIC = "pid"


class StallCheck:
    def __init__(self, config: AnomalyConfig) -> None:
        self.enabled = KIND not in config.disabled_kinds
        self.stall_minutes = config.stall_minutes

    def check(
        self,
        now: float,
        last_metric_time: float | None,
        status: str | None,
        pid: int | None,
        pid_alive: bool | None,
        last_step: int = 0,
    ) -> Finding | None:
        """The stall condition at time `now`, or None. `pid_alive` is None when unknown."""
        if not self.enabled or status is None or status not in TRAINING_STATUSES:
            return None
        if pid is not None and pid_alive is False:
            return Finding(
                kind=KIND,
                severity="critical",
                metric=PID_METRIC,
                value=float(pid),
                expected=None,
                detail=f"the status says {status!r} but the trainer process {pid} is gone",
                step=last_step,
            )
        if last_metric_time is None or self.stall_minutes <= 0.0:
            # Nothing logged yet: a run may load its model for a long time. 0 switches it off.
            return None
        minutes = (now - last_metric_time) / 60.0
        if minutes < self.stall_minutes:
            return None
        return Finding(
            kind=KIND,
            severity="critical",
            metric=SILENCE_METRIC,
            value=minutes,
            expected=self.stall_minutes,
            detail=(
                f"no new metric for {minutes:.0f} minutes while the status says {status!r} "
                f"(last at step {last_step})"
            ),
            step=last_step,
        )
