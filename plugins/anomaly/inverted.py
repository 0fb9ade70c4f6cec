"""inverted_loss: the losses point the wrong way, though each looks normal on its own.

Two conditions of the same kind:
- overfitting onset: the eval loss has not beaten its best for `evals` evaluations and is now
  `min_rise` above it, while the train loss (its mean between two evaluations) kept falling;
  that is early stopping's patience rule plus the train-loss check that tells overfitting from
  a run that simply stopped learning;
- preference training (DPO and friends): `rewards/chosen` significantly below
  `rewards/rejected` on average over the last `reward_points` points, i.e. the policy prefers
  the rejected answers (swapped columns do exactly that).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tunewatch.plugins.anomaly.base import Finding, Point
from tunewatch.plugins.anomaly.rolling import RollingWindow

CHOSEN, REJECTED = "rewards/chosen", "rewards/rejected"
# How many standard errors below zero the mean reward margin must be (a one-sided t-test).
REWARD_SIGNIFICANCE = 3.0


class _EvalOverfit:
    """Eval loss rising from its best while the train loss keeps falling."""

    def __init__(self, evals: int, min_rise: float, warmup_evals: int) -> None:
        self.evals = max(1, evals)
        self.min_rise = min_rise
        self.warmup_evals = warmup_evals
        self.seen = 0
        self.best: float | None = None
        self.since_best = 0
        self.train_at_best: float | None = None  # train-loss mean of the interval of the best
        self.train_mean: float | None = None  # of the last finished interval
        self.train_sum = 0.0
        self.train_count = 0

    def update(self, point: Point) -> Finding | None:
        loss = point.finite("loss")
        if loss is not None:
            self.train_sum += loss
            self.train_count += 1
        value = point.finite("eval_loss")
        if value is None:
            return None
        if self.train_count:
            # Averaging every train point between two evaluations removes the batch noise
            # without a smoothing constant to tune.
            self.train_mean = self.train_sum / self.train_count
            self.train_sum, self.train_count = 0.0, 0
        self.seen += 1
        if self.best is None or value < self.best:
            self.best, self.since_best, self.train_at_best = value, 0, self.train_mean
            return None
        self.since_best += 1
        return self._judge(value, point.step)

    def _judge(self, value: float, step: int) -> Finding | None:
        assert self.best is not None
        if self.seen < self.warmup_evals or self.since_best < self.evals:
            return None
        if value - self.best <= self.min_rise * abs(self.best):
            return None
        if self.train_mean is None or self.train_at_best is None:
            return None  # no train loss to compare: cannot tell overfitting from a bad run
        if self.train_mean >= self.train_at_best:
            return None
        # A best of exactly 0 has no relative rise to speak of (and must not divide by zero).
        rise = f"{value / self.best - 1:.0%}" if self.best > 0 else f"{value - self.best:.4g}"
        return Finding(
            kind=InvertedLossDetector.kind,
            severity="critical",
            metric="eval_loss",
            value=value,
            expected=self.best,
            detail=(
                f"eval_loss {value:.4g} is {rise} above its best "
                f"{self.best:.4g} after {self.since_best} evaluations while the train loss fell "
                f"from {self.train_at_best:.4g} to {self.train_mean:.4g} (overfitting?)"
            ),
            step=step,
        )

    def state(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "best": self.best,
            "since_best": self.since_best,
            "train_at_best": self.train_at_best,
            "train_mean": self.train_mean,
            "train_sum": self.train_sum,
            "train_count": self.train_count,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.seen = int(state["seen"])
        self.best = _optional(state["best"])
        self.since_best = int(state["since_best"])
        self.train_at_best = _optional(state["train_at_best"])
        self.train_mean = _optional(state["train_mean"])
        self.train_sum = float(state["train_sum"])
        self.train_count = int(state["train_count"])


class _RewardOrder:
    """Chosen rewards below rejected ones, on average over the last few points."""

    def __init__(self, points: int, warmup_points: int) -> None:
        self.margins = RollingWindow(max(1, points))
        self.warmup_points = warmup_points
        self.seen = 0

    def update(self, point: Point) -> Finding | None:
        chosen, rejected = point.finite(CHOSEN), point.finite(REJECTED)
        if chosen is None or rejected is None:
            return None
        self.margins.push(chosen - rejected)
        self.seen += 1
        if self.seen < self.warmup_points or len(self.margins) < self.margins.size:
            return None
        margin = self.margins.mean()
        # Significantly negative, not merely below zero: early in a run the true margin is ~0
        # and half of all windows would be negative by chance.
        stderr = self.margins.std() / math.sqrt(len(self.margins))
        if margin >= -REWARD_SIGNIFICANCE * stderr or margin >= 0.0:
            return None
        return Finding(
            kind=InvertedLossDetector.kind,
            severity="critical",
            metric=CHOSEN,
            value=chosen,
            expected=rejected,
            detail=(
                f"{CHOSEN} has been below {REJECTED} by {-margin:.3g} on average over the last "
                f"{len(self.margins)} points (step {point.step}): the model prefers the "
                f"rejected answers"
            ),
            step=point.step,
        )

    def state(self) -> dict[str, Any]:
        return {"margins": self.margins.state(), "seen": self.seen}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.margins.restore(state["margins"])
        self.seen = int(state["seen"])


class InvertedLossDetector:
    kind = "inverted_loss"

    def __init__(
        self,
        *,
        evals: int,
        min_rise: float,
        eval_warmup_points: int,
        reward_points: int,
        warmup_points: int,
    ) -> None:
        self._eval = _EvalOverfit(evals, min_rise, eval_warmup_points)
        self._rewards = _RewardOrder(reward_points, warmup_points)

    def update(self, point: Point) -> list[Finding]:
        found = (self._eval.update(point), self._rewards.update(point))
        return [f for f in found if f is not None]

    def state(self) -> dict[str, Any]:
        return {"eval": self._eval.state(), "rewards": self._rewards.state()}

    def restore(self, state: Mapping[str, Any]) -> None:
        self._eval.restore(state["eval"])
        self._rewards.restore(state["rewards"])


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)
