"""not_learning: after a warm-up, the loss is still where it started.

Each loss the run logs is a track: the train loss, and the eval loss once the run evaluates.
A track's start is the median of its first points (its warm-up: `warmup_points` train points,
`eval_warmup_points` evaluations) and its level now the median of as many latest points, on a
log scale (batch noise is relative). The run is learning while a track's level now is
`min_improvement` (relative) below its start; once that is beyond doubt (`LEARNED_SIGMAS`
standard errors more), for good: a loss back at its start later is divergence's or
overfitting's business. The run is not learning when every track it logs has had its `points`
(train) or `evals` (eval) and is flat: within `min_improvement` of its start either way, one
standard error included. Every track must agree because each misleads alone: a run that
converged before its first evaluation has a flat eval loss but a train loss that fell from its
first steps, and a train loss falls for a while on memorised batches whatever the eval loss
does.

A loss on an additive scale (`LossScale`: an RL objective around zero, a loss at its rounding
floor) is no track: it is not meant to fall, or has nowhere left to fall to.

Not learning is worth one message, not one per episode: the first episode is `normal` (pushed
once), any later one `info` (recorded only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

from tunewatch.daemon.events import Severity
from tunewatch.plugins.anomaly.base import Finding, Point, nan_stand_in
from tunewatch.plugins.anomaly.rolling import (
    DiffNoise,
    LossScale,
    RollingWindow,
    exp_or_inf,
    median_difference_error,
)

# Standard errors above `min_improvement` a track's improvement must be before the run counts
# as learning for good: a flat loss that dipped by luck must still be told it does not learn.
LEARNED_SIGMAS = 2.0
# ...and below it for the run to be said not to learn: a batch of 1 that learns slowly can show
# less than `min_improvement` for a while by bad luck.
FLAT_SIGMAS = 1.0

TRAIN, EVAL = "loss", "eval_loss"


class Verdict(Enum):
    UNKNOWN = "unknown"  # too early to tell, or no loss to tell by
    LEARNING = "learning"
    NOT_LEARNING = "not_learning"


class _Track:
    """One loss: its start level and its level now (medians of log values), and its noise."""

    def __init__(self, start_points: int, enough_points: int) -> None:
        self.start_points = max(1, start_points)
        self.enough_points = max(enough_points, 2 * self.start_points)
        self.scale = LossScale()
        self.start: float | None = None  # the median of the first `start_points` log values
        self.recent = RollingWindow(self.start_points)
        self.noise = DiffNoise()
        self.count = 0
        self.first_step: int | None = None
        self.joined_late = False

    def push(self, value: float, step: int) -> None:
        self.scale.push(value)
        if self.scale.additive:
            return
        log_value = math.log(value)
        self.count += 1
        self.recent.push(log_value)
        self.noise.push(log_value)
        if self.first_step is None:
            self.first_step = step
        if self.count == self.start_points:
            # Medians, not means: a first loss of 580 before the run settles at 9 (an untrained
            # head) is no start level, nor is one spike a level now.
            self.start = self.recent.median()
            # First seen later than its warm-up lasted, the loss was watched from the middle
            # of the run (tunewatch upgraded or started during it): that is no start either.
            self.joined_late = self.first_step > step - self.first_step

    @property
    def logged(self) -> bool:
        """Whether this loss is a track at all: logged from the start, on a log scale."""
        return self.count > 0 and not self.scale.additive and not self.joined_late

    def improvement(self) -> float | None:
        """How far below its start the level now is (relative), once both are measured."""
        if not self.logged or self.start is None or self.count < 2 * self.start_points:
            return None
        return 1.0 - exp_or_inf(self.recent.median() - self.start)

    def standard_error(self) -> float:
        """Of `improvement()`: the difference of two medians of `start_points` values."""
        return median_difference_error(self.noise.std(), self.start_points, self.start_points)

    def levels(self) -> tuple[float, float]:
        """(start, now), as loss values."""
        start = math.nan if self.start is None else exp_or_inf(self.start)
        return start, exp_or_inf(self.recent.median())

    def state(self) -> dict[str, Any]:
        return {
            "scale": self.scale.state(),
            "start": self.start,
            "recent": self.recent.state(),
            "noise": self.noise.state(),
            "count": self.count,
            "first_step": self.first_step,
            "joined_late": self.joined_late,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.scale.restore(state["scale"])
        start = state["start"]
        self.start = None if start is None else float(start)
        self.recent.restore(state["recent"])
        self.noise.restore(state["noise"])
        self.count = int(state["count"])
        # States saved before these were kept: a track then was judged from its start.
        first_step = state.get("first_step")
        self.first_step = None if first_step is None else int(first_step)
        self.joined_late = bool(state.get("joined_late", False))


class LossProgress:
    """Whether the run's losses show it learning: the judgement `NotLearningDetector` reports,
    and `AccuracyDropDetector` consults (an accuracy's "best" on a run that learns nothing is a
    lucky draw of noise)."""

    def __init__(
        self,
        *,
        min_improvement: float,
        points: int,
        evals: int,
        warmup_points: int,
        eval_warmup_points: int,
    ) -> None:
        self.min_improvement = min_improvement
        self.learned = False
        self.tracks = {
            TRAIN: _Track(warmup_points, points),
            EVAL: _Track(eval_warmup_points, evals),
        }

    def update(self, point: Point) -> None:
        if self.learned:
            return  # for good: nothing left to watch
        for metric, track in self.tracks.items():
            value = point.finite(metric)
            if value is not None and not nan_stand_in(point, value):
                track.push(value, point.step)

    def verdict(self) -> Verdict:
        if self.learned:
            return Verdict.LEARNING
        logged = [track for track in self.tracks.values() if track.logged]
        if any([self._improved(track) for track in logged]):  # (each may note `learned`)
            return Verdict.LEARNING
        if logged and all(self._flat(track) for track in logged):
            return Verdict.NOT_LEARNING
        return Verdict.UNKNOWN

    def _improved(self, track: _Track) -> bool:
        improvement = track.improvement()
        if improvement is None or improvement < self.min_improvement:
            return False
        # Improved beyond doubt, the run has learned, for good: a loss back at its start
        # later is divergence's or overfitting's business.
        if improvement - LEARNED_SIGMAS * track.standard_error() >= self.min_improvement:
            self.learned = True
        return True

    def _flat(self, track: _Track) -> bool:
        """Judged, and within `min_improvement` of its start either way, noise included."""
        improvement = track.improvement()
        if improvement is None or track.count < track.enough_points:
            return False
        # One whose noise may hide an improvement is not flat (a batch of 1, learning slowly),
        # nor one clearly above its start (divergence's business).
        noise = FLAT_SIGMAS * track.standard_error()
        return -self.min_improvement - noise < improvement < self.min_improvement - noise

    def judged_metric(self) -> str:
        """The loss a person knows the run by: the eval loss once it evaluates."""
        return EVAL if self.tracks[EVAL].logged else TRAIN

    def state(self) -> dict[str, Any]:
        tracks = {metric: track.state() for metric, track in self.tracks.items()}
        return {"tracks": tracks, "learned": self.learned}

    def restore(self, state: Mapping[str, Any]) -> None:
        for metric, track in self.tracks.items():
            track.restore(state["tracks"][metric])
        self.learned = bool(state["learned"])


class NotLearningDetector:
    kind = "not_learning"

    def __init__(self, progress: LossProgress) -> None:
        self.progress = progress
        self._reported = False  # an episode was reported...
        self._ended = False  # ...and has ended: later ones are recorded, not pushed

    def update(self, point: Point) -> list[Finding]:
        self.progress.update(point)
        metric = self.progress.judged_metric()
        if metric not in point.metrics:
            return []
        if self.progress.verdict() is not Verdict.NOT_LEARNING:
            self._ended = self._reported
            return []
        self._reported = True
        return [self._finding(metric, point.step)]

    def _finding(self, metric: str, step: int) -> Finding:
        track = self.progress.tracks[metric]
        start, now = track.levels()
        severity: Severity = "info" if self._ended else "normal"
        points = "evaluations" if metric == EVAL else "logged points"
        return Finding(
            kind=self.kind,
            severity=severity,
            metric=metric,
            value=now,
            expected=start,
            detail=(
                f"{metric} {now:.4g} at step {step:,} is within "
                f"{self.progress.min_improvement:.0%} of where it started, {start:.4g}, after "
                f"{track.count} {points}"
            ),
            step=step,
        )

    def state(self) -> dict[str, Any]:
        return {
            "progress": self.progress.state(),
            "reported": self._reported,
            "ended": self._ended,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.progress.restore(state["progress"])
        self._reported = bool(state["reported"])
        self._ended = bool(state["ended"])
