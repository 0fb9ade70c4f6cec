"""inverted_loss: the losses point the wrong way, though each looks normal on its own.

Two conditions of the same kind:
- overfitting onset: the eval loss has not beaten its best for `evals` evaluations and is now
  `min_rise` above it, while the train loss (its mean between two evaluations) kept falling;
  that is early stopping's patience rule plus the train-loss check that tells overfitting from
  a run that simply stopped learning. When the run ends, a rise the live reading left within
  the noise is judged again, with the one fact only the end gives: it lasted to the end
  (`at_end`);
- preference training (DPO and friends): `rewards/chosen` significantly below
  `rewards/rejected` on average over the last `reward_points` points, i.e. the policy prefers
  the rejected answers (swapped columns do exactly that).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tunewatch.plugins.anomaly.base import Finding, Point
from tunewatch.plugins.anomaly.rolling import (
    CurveNoise,
    DiffNoise,
    RollingWindow,
    median_difference_error,
    optional_float,
)

CHOSEN, REJECTED = "rewards/chosen", "rewards/rejected"
# Overfitting: the eval loss's level must be this many standard deviations of one evaluation
# above its best, the noise measured over the last NOISE_EVALS evaluations (a run's early
# evaluations swing more than its late ones; fewer make the MAD estimate itself swing).
NOISE_SIGMAS = 2.0
NOISE_EVALS = 30
# The train loss at an evaluation: the median of its points since the last one (at most this
# many, the latest): a mean would follow one bad batch.
TRAIN_POINTS = 50
# ...and must have fallen by this much (relative) since the best: a train loss on a plateau
# drifts below its old median by chance, half the time.
TRAIN_DROP = 0.05
# ...and by this many standard errors of the difference of the two medians (per-point noise of
# the log train loss, `DiffNoise`): with one train point logged per evaluation, 5 % is a coin
# toss, and a run whose train loss is flat but noisy is not "still fitting the training data".
TRAIN_SIGMAS = 2.0
# ...and the latest evaluation must be this much above the best (relative): the labelling rule's
# "the last evaluation of that stretch is at least 5 % above it". The level (a median) passes
# `min_rise` on a smooth curve whose evaluations stay 1-4 % above the best, which rule 4 calls
# noise. A real rise shows in the newest evaluation first, so this costs little delay
# (measured: none on the held-out synthetic set or on any overfitting the real corpus shows; one
# evaluation on a dev tiny run whose eval loss rose 1 %, 4 %, 3 %, then 7 %).
LATEST_RISE = 0.05
# Overfitting at the run's end compares the train loss's median since the best evaluation with
# its median over as many points before it; the latest this many on each side are kept.
END_TRAIN_POINTS = 256
# How many standard errors below zero the mean reward margin must be (a one-sided t-test).
REWARD_SIGNIFICANCE = 3.0


class _EvalOverfit:
    """Eval loss rising from its best while the train loss keeps falling.

    Early stopping's patience rule, made robust to a noisy eval loss (a small eval set): the
    eval loss has not beaten its best for `evals` evaluations, and its level now, the median of
    its last `evals` evaluations (one high evaluation is a bad draw), is `min_rise` above that
    best and beyond its noise: `NOISE_SIGMAS` standard deviations of one evaluation, from the
    second differences of the last `NOISE_EVALS` (log scale; `CurveNoise`); and the newest
    evaluation is `LATEST_RISE` above the best. An eval loss that
    swings by half from one evaluation to the next says nothing with a 30 % rise, while a
    smooth one rising by 5 % is news. Once said, overfitting lasts until the eval loss beats
    its best. The train loss (the median of its points since the previous
    evaluation) must be `TRAIN_DROP` below where it was at the best, and by `TRAIN_SIGMAS`
    standard errors of those two medians: a run whose train loss rose too is diverging, and one
    whose train loss stopped falling is on a plateau, not overfitting, however far a single
    noisy train point per evaluation happens to land below the one at the best.
    """

    def __init__(self, evals: int, min_rise: float, warmup_evals: int) -> None:
        self.evals = max(1, evals)
        self.min_rise = min_rise
        self.warmup_evals = warmup_evals
        self.seen = 0
        self.recent = RollingWindow(self.evals)
        self.noise = CurveNoise(NOISE_EVALS)
        self.best: float | None = None
        self.best_step = 0
        self.since_best = 0
        self.train = RollingWindow(TRAIN_POINTS)
        self.train_noise = DiffNoise()
        self.train_at_best: float | None = None
        self.train_now: float | None = None
        # How many points each of those two medians was taken over (their standard errors).
        self.train_count_at_best = 0
        self.train_count_now = 0
        self.overfitting = False  # said, and the eval loss has not beaten its best since
        # For the run's end: the train losses up to the best evaluation and since it.
        self.train_to_best = RollingWindow(END_TRAIN_POINTS)
        self.train_since_best = RollingWindow(END_TRAIN_POINTS)

    def update(self, point: Point) -> Finding | None:
        loss = point.finite("loss")
        if loss is not None:
            self.train.push(loss)
            self.train_since_best.push(loss)
            if loss > 0.0:
                self.train_noise.push(math.log(loss))
        value = point.finite("eval_loss")
        if value is None:
            return None
        self.seen += 1
        self.recent.push(value)
        if value > 0.0:
            self.noise.push(math.log(value))
        if len(self.train):
            self.train_now, self.train_count_now = self.train.median(), len(self.train)
            self.train = RollingWindow(TRAIN_POINTS)
        if self.best is None or value < self.best:
            self.best, self.best_step, self.since_best = value, point.step, 0
            self.train_at_best, self.train_count_at_best = self.train_now, self.train_count_now
            self.overfitting = False
            for before in self.train_since_best.values():
                self.train_to_best.push(before)
            self.train_since_best = RollingWindow(END_TRAIN_POINTS)
            return None
        self.since_best += 1
        finding = self._judge(self.recent.median(), value, point.step)
        if finding is not None:
            self.overfitting = True
        elif self.overfitting:
            # Once said, overfitting lasts until the eval loss beats its best: a lucky
            # evaluation on the way up is no recovery, and no reason to tell it again.
            finding = self._still(value, point.step)
        return finding

    def end_may_tell(self) -> bool:
        """Whether `at_end` could find overfitting now: the eval loss has stayed above its
        best long enough and no one said so yet (the rest of its test is for the end)."""
        return not self.overfitting and self.best is not None and self.since_best >= self.evals

    def at_end(self, step: int) -> Finding | None:
        """Overfitting told when the run has ended (`step`, its last): labelling rule 4, whose
        "the rise lasts to the end of the run" only the end can tell.

        The eval loss has not beaten its best for `evals` evaluations or more and its last one
        is `LATEST_RISE` above it, while the train loss's median since the best is `TRAIN_DROP`
        below its median over as many points before it. No noise test: a rise that lasted to
        the end is the evidence a rise within the noise lacked while the run went on (an eval
        loss swinging by 30 % between evaluations, 28 % up for its last three). Not said when
        the live reading already said it, and said once.
        """
        best = self.best
        if not self.end_may_tell() or best is None or best <= 0.0:
            return None
        latest = self.recent.values()[-1]  # (there is one: the best is an evaluation)
        if self.seen < self.warmup_evals:
            return None
        if latest - best < LATEST_RISE * best:
            return None
        count = len(self.train_since_best)
        if count == 0 or len(self.train_to_best) == 0:
            return None
        since, before = self.train_since_best.median(), self.train_to_best.median(last=count)
        if before <= 0.0 or since > before * (1.0 - TRAIN_DROP):
            return None
        self.overfitting = True
        return self._finding(
            latest,
            step,
            # The action first: a notification shows only the first hundred characters.
            f"the best model is at step {self.best_step}: the run ended with eval_loss "
            f"{latest / best - 1:.0%} above its best {best:.4g} there, not beaten in "
            f"{self.since_best} evaluations, while the train loss fell from {before:.4g} to "
            f"{since:.4g} (overfitting; medians of {count} train points after the best and as "
            f"many before)",
        )

    def _still(self, value: float, step: int) -> Finding:
        assert self.best is not None
        return self._finding(
            value,
            step,
            f"eval_loss {value:.4g} has not beaten its best {self.best:.4g} at step "
            f"{self.best_step} for {self.since_best} evaluations (overfitting?)",
        )

    def _finding(self, value: float, step: int, detail: str) -> Finding:
        return Finding(
            kind=InvertedLossDetector.kind,
            severity="normal",
            metric="eval_loss",
            value=value,
            expected=self.best,
            detail=detail,
            step=step,
        )

    def _judge(self, level: float, latest: float, step: int) -> Finding | None:
        assert self.best is not None
        if self.seen < self.warmup_evals or self.since_best < self.evals:
            return None
        if level - self.best <= self.min_rise * abs(self.best):
            return None
        if latest - self.best < LATEST_RISE * abs(self.best):
            return None
        if self.best > 0.0 and math.log(level / self.best) <= NOISE_SIGMAS * self.noise.std():
            return None
        if self.train_now is None or self.train_at_best is None:
            return None  # no train loss to compare: cannot tell overfitting from a bad run
        if self.train_now >= self.train_at_best * (1.0 - TRAIN_DROP):
            return None
        if not self._train_fell_beyond_noise():
            return None
        # A best of exactly 0 has no relative rise to speak of (and must not divide by zero).
        rise = f"{level / self.best - 1:.0%}" if self.best > 0 else f"{level - self.best:.4g}"
        return self._finding(
            level,
            step,
            f"eval_loss {level:.4g} (median of the last {len(self.recent)} evaluations) is "
            f"{rise} above its best {self.best:.4g} at step {self.best_step}, "
            f"{self.since_best} evaluations ago, while the train loss fell from "
            f"{self.train_at_best:.4g} to {self.train_now:.4g} (overfitting?)",
        )

    def _train_fell_beyond_noise(self) -> bool:
        """Whether the train loss's fall since the best is more than its medians' luck (log
        scale)."""
        assert self.train_now is not None and self.train_at_best is not None
        if self.train_now <= 0.0 or self.train_at_best <= 0.0:
            return True  # no log scale: the relative drop above is all there is to judge
        counts = (self.train_count_now, self.train_count_at_best)
        if min(counts) < 1:
            return True  # (a state saved before the counts were kept)
        error = median_difference_error(self.train_noise.std(), *counts)
        return math.log(self.train_at_best / self.train_now) > TRAIN_SIGMAS * error

    def state(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "recent": self.recent.state(),
            "noise": self.noise.state(),
            "best": self.best,
            "best_step": self.best_step,
            "since_best": self.since_best,
            "train": self.train.state(),
            "train_at_best": self.train_at_best,
            "train_now": self.train_now,
            "train_noise": self.train_noise.state(),
            "train_count_at_best": self.train_count_at_best,
            "train_count_now": self.train_count_now,
            "overfitting": self.overfitting,
            "train_to_best": self.train_to_best.state(),
            "train_since_best": self.train_since_best.state(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        if "recent" not in state:
            return  # saved by the single-evaluation rule: starts afresh, as after a wipe
        self.seen = int(state["seen"])
        self.recent.restore(state["recent"])
        self.noise.restore(state["noise"])
        self.best = optional_float(state["best"])
        self.best_step = int(state["best_step"])
        self.since_best = int(state["since_best"])
        self.train.restore(state["train"])
        self.train_at_best = optional_float(state["train_at_best"])
        self.train_now = optional_float(state["train_now"])
        # (States saved before the train loss's noise was kept judge without it until it has
        # a few points: `_train_fell_beyond_noise` reads counts of 0 as "not known".)
        if "train_noise" in state:
            self.train_noise.restore(state["train_noise"])
        self.train_count_at_best = int(state.get("train_count_at_best", 0))
        self.train_count_now = int(state.get("train_count_now", 0))
        self.overfitting = bool(state["overfitting"])
        # (A state saved before ends were judged has none of these: the end then compares
        # only the train losses logged since the restart.)
        if "train_to_best" in state:
            self.train_to_best.restore(state["train_to_best"])
            self.train_since_best.restore(state["train_since_best"])


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

    def end_may_tell(self) -> bool:
        return self._eval.end_may_tell()

    def at_end(self, step: int) -> list[Finding]:
        found = self._eval.at_end(step)
        return [] if found is None else [found]

    def state(self) -> dict[str, Any]:
        return {"eval": self._eval.state(), "rewards": self._rewards.state()}

    def restore(self, state: Mapping[str, Any]) -> None:
        self._eval.restore(state["eval"])
        self._rewards.restore(state["rewards"])
