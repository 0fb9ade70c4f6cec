"""accuracy_drop: an accuracy more than `drop_points` below its best of the recent window.

`drop_points` is in percentage points; a metric whose values never exceeded 1.0 is taken to be a
fraction and the threshold is divided by 100. Train accuracies are per batch and noisy, so they
are compared after an EWMA; eval accuracies (`eval_` prefix) already average a whole eval set
and are compared raw. With a small batch, even the smoothed train accuracy wanders by more than
a few points, so its drop must also exceed `sigmas` times the smoothed value's noise (estimated
from successive differences, as divergence does): a light smoothing then reacts quickly at
large batch sizes without alerting on the noise of small ones.

Accuracies are judged only once the run's losses show it learning (`LossProgress`), or when
it logs no loss to tell by: on a run that learns nothing the accuracy is noise around chance,
its recent best a lucky draw, and any evaluation a few points below it a "drop".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tunewatch.plugins.anomaly.base import Finding, Point
from tunewatch.plugins.anomaly.not_learning import LossProgress, Verdict
from tunewatch.plugins.anomaly.rolling import DiffNoise, Ewma, RollingWindow

# Where the state keeps the losses' progress, beside the tracks named by their metric.
PROGRESS_KEY = "(progress)"


class _Track:
    """One accuracy metric: its (smoothed) recent values and whether it is a percentage."""

    def __init__(self, window_points: int, alpha: float) -> None:
        self.smooth = Ewma(alpha)
        self.noise = DiffNoise()
        self.recent = RollingWindow(window_points)
        self.percent = False

    def smoothed_noise(self) -> float:
        alpha = self.smooth.alpha
        if alpha >= 1.0:
            # Unsmoothed eval values: the few differences between evaluations measure the
            # learning curve's bends, not noise, and an eval set average has little noise.
            return 0.0
        return self.noise.std() * math.sqrt(alpha / (2.0 - alpha))

    def state(self) -> dict[str, Any]:
        return {
            "ewma": self.smooth.state(),
            "noise": self.noise.state(),
            "recent": self.recent.state(),
            "percent": self.percent,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.smooth.restore(state["ewma"])
        self.noise.restore(state["noise"])
        self.recent.restore(state["recent"])
        self.percent = bool(state["percent"])


class AccuracyDropDetector:
    kind = "accuracy_drop"

    def __init__(
        self,
        metrics: tuple[str, ...],
        *,
        drop_points: float,
        sigmas: float,
        window_points: int,
        alpha: float,
        warmup_points: int,
        eval_warmup_points: int,
        progress: LossProgress,
    ) -> None:
        self.drop_points = drop_points
        self.sigmas = sigmas
        self.progress = progress
        self._warmup = {m: eval_warmup_points if _is_eval(m) else warmup_points for m in metrics}
        self._tracks = {m: _Track(window_points, 1.0 if _is_eval(m) else alpha) for m in metrics}

    def update(self, point: Point) -> list[Finding]:
        self.progress.update(point)
        findings: list[Finding] = []
        for metric, track in self._tracks.items():
            value = point.finite(metric)
            if value is None:
                continue
            finding = self._update_one(metric, track, value, point.step)
            if finding is not None:
                findings.append(finding)
        return findings if self._judged() else []

    def _judged(self) -> bool:
        """Whether the losses let accuracies be judged. (The tracks go on all the same: once
        the run learns, their recent best is ready.)"""
        if self.progress.verdict() is Verdict.LEARNING:
            return True
        return not any(track.logged for track in self.progress.tracks.values())

    def _update_one(self, metric: str, track: _Track, value: float, step: int) -> Finding | None:
        # Once a value above 1 is seen the metric is a percentage for good: a fraction never
        # exceeds 1, while a percentage only stays below 1 in a model's first moments.
        track.percent = track.percent or value > 1.0
        smoothed = track.smooth.push(value)
        track.noise.push(value)
        if track.smooth.count <= self._warmup[metric]:
            return None  # the warm-up neither judges nor sets the best to compare against
        best = track.recent.max() if len(track.recent) else None
        track.recent.push(smoothed)
        if best is None:
            return None
        threshold = self.drop_points if track.percent else self.drop_points / 100.0
        drop = best - smoothed
        if drop <= threshold or drop <= self.sigmas * track.smoothed_noise():
            return None
        unit = " points" if track.percent else ""
        return Finding(
            kind=self.kind,
            severity="normal",
            metric=metric,
            value=smoothed,
            expected=best,
            detail=(
                f"{metric} {smoothed:.4g} at step {step} is {drop:.3g}{unit} below "
                f"its recent best {best:.4g}"
            ),
            step=step,
        )

    def state(self) -> dict[str, Any]:
        tracks = {metric: track.state() for metric, track in self._tracks.items()}
        return {**tracks, PROGRESS_KEY: self.progress.state()}

    def restore(self, state: Mapping[str, Any]) -> None:
        for metric, track in self._tracks.items():
            if metric in state:
                track.restore(state[metric])
        if PROGRESS_KEY in state:
            self.progress.restore(state[PROGRESS_KEY])
        else:
            # Saved before accuracies waited for the losses: judged as they were then.
            self.progress.learned = True


def _is_eval(metric: str) -> bool:
    return metric.startswith("eval_")
