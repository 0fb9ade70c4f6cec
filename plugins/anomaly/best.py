"""best_model: tells when the run has produced a new best model.

The judge is the eval loss as soon as the run logs one; before that (or in runs without
evaluation) it is the EWMA-smoothed train loss, after the warm-up. A new best must beat the
previous one by `min_improvement` (relative), so noise does not announce a stream of "best"
models. After a NaN/Inf in a loss or gradient norm the weights are suspect, so nothing later is
announced as a best (Hugging Face even logs a loss of 0.0 after a NaN).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tunewatch.plugins.anomaly.base import NewBest, Point
from tunewatch.plugins.anomaly.rolling import Ewma

EVAL, TRAIN = "eval_loss", "loss"


class BestModelTracker:
    def __init__(
        self,
        *,
        min_improvement: float,
        alpha: float,
        warmup_points: int,
        poison_metrics: tuple[str, ...] = ("loss", "eval_loss", "grad_norm"),
    ) -> None:
        self.min_improvement = min_improvement
        self.poison_metrics = poison_metrics
        self.warmup_points = warmup_points
        self._train = Ewma(alpha)
        self._metric: str | None = None  # the metric the current best is measured in
        self._best: float | None = None
        self._poisoned = False

    def update(self, point: Point) -> NewBest | None:
        if self._poisoned or _has_non_finite(point, self.poison_metrics):
            self._poisoned = True
            return None
        eval_loss = point.finite(EVAL)
        if eval_loss is not None:
            return self._offer(EVAL, eval_loss, point.step)
        loss = point.finite(TRAIN)
        if loss is None or self._metric == EVAL:
            return None
        smoothed = self._train.push(loss)
        if self._train.count < self.warmup_points:
            return None
        return self._offer(TRAIN, smoothed, point.step)

    def _offer(self, metric: str, value: float, step: int) -> NewBest | None:
        if metric != self._metric:
            # The eval loss takes over from the train loss: its first value is the first best.
            self._metric, self._best = metric, value
            return NewBest(step=step, metric=metric, value=value, previous=None)
        assert self._best is not None
        if value >= self._best - self.min_improvement * abs(self._best):
            return None
        previous, self._best = self._best, value
        return NewBest(step=step, metric=metric, value=value, previous=previous)

    def state(self) -> dict[str, Any]:
        return {
            "train": self._train.state(),
            "metric": self._metric,
            "best": self._best,
            "poisoned": self._poisoned,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self._train.restore(state["train"])
        metric, best = state["metric"], state["best"]
        self._metric = None if metric is None else str(metric)
        self._best = None if best is None else float(best)
        self._poisoned = bool(state["poisoned"])


def _has_non_finite(point: Point, metrics: tuple[str, ...]) -> bool:
    return any(
        (value := point.metrics.get(m)) is not None and not math.isfinite(value) for m in metrics
    )
