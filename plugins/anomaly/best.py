"""best_model: tells when the run has produced a new best model.

The judge is the eval loss as soon as the run logs one; before that (or in runs without
evaluation) it is the EWMA-smoothed train loss, after the warm-up. A new best must beat the
previous one by `min_improvement` (relative), so noise does not announce a stream of "best"
models. A loss judged on an additive scale (see `LossScale`) picks no best: an RL objective
around zero is no measure of the model, and a loss at its rounding floor has no better to go to.

Whether the weights can be trusted follows the non_finite detector's verdict on the same
metrics (`poison_metrics`):
- a point it calls info, a grad norm that overflowed in fp16 while the loss is finite, is
  skipped: GradScaler skipped that step, so the weights are those of the point before, and a
  loss logged with a NaN may be a stand-in (Hugging Face logs 0.0, `logging_nan_inf_filter`);
- a point it calls critical, a non-finite loss or a non-finite grad norm that lasts, may have
  left NaN weights: nothing is announced until the run has logged `persist_points` healthy
  points in a row (every watched metric finite, a train loss above zero), and the next best
  must still beat the best from before. NaN weights never log a finite grad norm or eval loss
  again; Hugging Face's filter may go on logging a train loss for them, but a mean of earlier
  steps or 0.0, which never beats the best from before, nor counts as healthy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tunewatch.plugins.anomaly.base import NewBest, Point
from tunewatch.plugins.anomaly.non_finite import NonFiniteDetector
from tunewatch.plugins.anomaly.rolling import Ewma, LossScale

EVAL, TRAIN = "eval_loss", "loss"


class BestModelTracker:
    def __init__(
        self,
        *,
        min_improvement: float,
        alpha: float,
        warmup_points: int,
        poison_metrics: tuple[str, ...] = ("loss", "eval_loss", "grad_norm"),
        persist_points: int = 3,
    ) -> None:
        self.min_improvement = min_improvement
        self.warmup_points = warmup_points
        self.persist_points = max(1, persist_points)
        self._non_finite = NonFiniteDetector(poison_metrics, self.persist_points)
        self._train = Ewma(alpha)
        self._scales = {EVAL: LossScale(), TRAIN: LossScale()}
        self._metric: str | None = None  # the metric the current best is measured in
        self._best: float | None = None
        self._poisoned = False
        self._healthy = 0  # healthy points in a row since the weights were last distrusted

    def update(self, point: Point) -> NewBest | None:
        findings = self._non_finite.update(point)
        if any(f.severity == "critical" for f in findings):
            self._poisoned, self._healthy = True, 0
            return None
        if findings or (self._poisoned and not self._trusted_again(point)):
            return None
        eval_loss = point.finite(EVAL)
        if eval_loss is not None:
            return self._judge(EVAL, eval_loss, point.step)
        loss = point.finite(TRAIN)
        if loss is None or self._metric == EVAL:
            return None
        return self._judge(TRAIN, loss, point.step)

    def _trusted_again(self, point: Point) -> bool:
        """Count `point` towards the healthy streak that ends a distrust; True once it is long
        enough (the points of the streak are the evidence, not candidates)."""
        eval_loss, loss = point.finite(EVAL), point.finite(TRAIN)
        if eval_loss is None and loss is None:
            return False  # no loss logged: no evidence either way
        if eval_loss is None and loss is not None and loss <= 0.0:
            self._healthy = 0  # Hugging Face's stand-in for a NaN loss
            return False
        self._healthy += 1
        if self._healthy < self.persist_points:
            return False
        self._poisoned = False
        return False

    def _judge(self, metric: str, value: float, step: int) -> NewBest | None:
        scale = self._scales[metric]
        scale.push(value)
        if scale.additive:
            return None
        if metric == TRAIN:
            value = self._train.push(value)
            if self._train.count < self.warmup_points:
                return None
        return self._offer(metric, value, step)

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
            "healthy": self._healthy,
            "non_finite": self._non_finite.state(),
            "scales": {metric: scale.state() for metric, scale in self._scales.items()},
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self._train.restore(state["train"])
        metric, best = state["metric"], state["best"]
        self._metric = None if metric is None else str(metric)
        self._best = None if best is None else float(best)
        self._poisoned = bool(state["poisoned"])
        # A state saved before these were kept: a run poisoned for good by an fp16 overflow
        # gets its best-model tracking back once it is seen healthy.
        self._healthy = int(state.get("healthy", 0))
        self._non_finite.restore(state.get("non_finite", {}))
        for metric, scale in state.get("scales", {}).items():
            self._scales[str(metric)].restore(scale)
