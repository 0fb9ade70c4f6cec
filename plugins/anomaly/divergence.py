"""divergence: a sustained rise of the loss, as opposed to a one-point spike.

The loss is smoothed with an EWMA on a log scale (batch noise is multiplicative). The run
diverges when, for `points` consecutive points, the loss itself is `min_rise` above the best
smoothed value seen since the warm-up and the smoothed loss is above it by the larger of two
margins:
- `min_rise` (relative), so a smooth curve does not alert on a small drift;
- `sigmas` times the noise of the smoothed loss, so a noisy curve (batch size 1) does not
  alert because its minimum was a lucky dip. The batch noise is estimated robustly from
  successive differences (`DiffNoise`): a steady trend shifts those differences without
  spreading them, so the decay of a healthy run does not inflate the estimate.
It is a level condition: reported on every point while it holds, silent once the smoothed loss
comes back; the gate turns that into one alert and one recovery.

A second reading, `MedianRise`, catches what the EWMA cannot: a short, very noisy run whose
rolling median doubles (inside the EWMA's warm-up, or with a noise estimate as large as the
rise). Either reading makes the condition hold; it is one divergence, told once.

A loss judged on an additive scale (`LossScale`: an RL objective around zero, a loss at its
rounding floor) is smoothed as it is, and has no level for a relative rise: the whole margin is
`sigmas` times its noise (the raw noise, at least the rounding floor). Its reference is the
lowest smoothed value of the last `REFERENCE_POINTS` points rather than of the whole run,
because such a loss may drift by design (GRPO's KL term grows as the policy moves away from its
reference model); the points of a rise never enter it, so a blow-up stays one while it lasts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tunewatch.plugins.anomaly.base import Finding, Point, nan_stand_in
from tunewatch.plugins.anomaly.median_rise import MedianRise
from tunewatch.plugins.anomaly.rolling import (
    DiffNoise,
    Ewma,
    LossScale,
    RollingWindow,
    exp_or_inf,
    optional_float,
)

# Points of an additive-scale loss that make its reference level: a drift slower than this is
# the objective's own.
REFERENCE_POINTS = 200
# The latest successive differences (of the long window's) that measure the noise of the loss's
# current stretch. The long window (`DiffNoise`'s 200) is stable but slow: when the loss drops to
# a new level (a second epoch on memorised data, 0.5 -> 0.07 in a real DPO run), its relative
# noise can grow severalfold while the long window still holds mostly the old level. The recent
# estimate is the noise when it is this many times the long one: the MAD of 50 differences
# strays by about 16 % (it is a 37 % efficient estimator), so 1.5 is a new regime, not its
# wobble (which would only slow every alert down).
RECENT_NOISE_POINTS = 50
NEW_REGIME_FACTOR = 1.5
# A loss far below both of the two before it (by `min_rise` and by this many sigmas of the current
# stretch's batch noise) is a low outlier: the best is the lowest of a second EWMA that takes it
# at the lower of those two (the median of the three), so one low point does not become the
# level the run is held to.
# A real 3,497-point run that was resumed every two epochs logged 0.25 at the first step of
# one segment, where it sat at 0.46 before and after; that segment's new learning-rate schedule
# lifted the loss 8 % and, against the "best" the 0.25 had dragged the EWMA to, it looked 30 %
# up: a false critical push. The smoothed loss judged is untouched and the best can only be
# higher, so this never adds an alert; a real fall reaches the best one point later.
LOW_OUTLIER_SIGMAS = 3.0


class DivergenceDetector:
    kind = "divergence"

    def __init__(
        self,
        metric: str,
        *,
        alpha: float,
        min_rise: float,
        sigmas: float,
        points: int,
        warmup_points: int,
    ) -> None:
        self.metric = metric
        self.min_margin = math.log1p(min_rise)
        self.sigmas = sigmas
        self.points = max(1, points)
        self.warmup_points = warmup_points
        self._ewma = Ewma(alpha)
        self._previous: list[float] = []  # the last two log-losses
        self._floor_ewma = Ewma(alpha)  # the smoothed loss the best is taken from
        self._noise = DiffNoise()
        self._scale = LossScale()
        self._recent = RollingWindow(REFERENCE_POINTS)  # smoothed values, on an additive scale
        self._median = MedianRise()
        self._best: float | None = None  # lowest smoothed log-loss since the warm-up
        self._best_step = 0
        self._streak = 0

    def update(self, point: Point) -> list[Finding]:
        value = point.finite(self.metric)
        if value is None or nan_stand_in(point, value):
            return []
        if self._scale.push(value):
            self._restart()
        if self._scale.additive:
            return self._update_additive(value, point.step)
        median_level = self._median.push(value, point.step)
        found = self._update_log(value, point.step)
        if not found and median_level is not None:
            found = [self._median_finding(median_level, point.step)]
        return found

    def _update_log(self, value: float, step: int) -> list[Finding]:
        log_value = math.log(value)
        self._noise.push(log_value)
        smoothed = self._ewma.push(log_value)
        floor = self._floor_ewma.push(self._unless_low_outlier(log_value))
        self._previous = [*self._previous[-1:], log_value]
        # The warm-up is excluded from the best: early points (LR warm-up) are not a level to
        # hold the run to.
        if self._ewma.count < self.warmup_points:
            return []
        if self._best is None or floor < self._best:
            self._best = floor
            self._best_step = step
        rise = smoothed - self._best
        # The point itself must be up too: after a one-point spike the EWMA stays high for a
        # few points while the loss is already back, and that is not a sustained rise.
        # (The noise estimate, O(window), is only needed once the cheap tests pass.)
        above = (
            rise > self.min_margin
            and log_value - self._best > self.min_margin
            and rise > self.sigmas * self._smoothed_noise()
        )
        self._streak = self._streak + 1 if above else 0
        if self._streak < self.points:
            return []
        return [self._log_finding(smoothed, self._best, step)]

    def _unless_low_outlier(self, log_value: float) -> float:
        """The log-loss, or the lower of the two before it when it is far below both."""
        if len(self._previous) < 2:
            return log_value
        lower = min(self._previous)
        dip = lower - log_value
        # (The noise, O(window), only once the cheap test passes.)
        if dip > self.min_margin and dip > LOW_OUTLIER_SIGMAS * self._noise.std(
            last=RECENT_NOISE_POINTS
        ):
            return lower
        return log_value

    def _restart(self) -> None:
        """A new scale: what was smoothed, measured and held as best on the log scale is no
        baseline for it, and it warms up afresh."""
        self._ewma = Ewma(self._ewma.alpha)
        self._previous = []
        self._floor_ewma = Ewma(self._ewma.alpha)
        self._noise = DiffNoise()
        self._median = MedianRise()
        self._best, self._streak = None, 0

    def _update_additive(self, value: float, step: int) -> list[Finding]:
        self._noise.push(value)
        smoothed = self._ewma.push(value)
        if self._ewma.count < self.warmup_points:
            return []
        reference = min(self._recent.min(), smoothed) if len(self._recent) else smoothed
        rise = smoothed - reference
        least = self.sigmas * self._scale.floor
        above = rise > least and value - reference > least and rise > self.sigmas * self._spread()
        self._streak = self._streak + 1 if above else 0
        if not above:
            self._recent.push(smoothed)
        if self._streak < self.points:
            return []
        return [self._additive_finding(smoothed, reference, step)]

    def _spread(self) -> float:
        """The noise of an additive-scale loss, at least its rounding floor."""
        return max(self._noise.std(), self._scale.floor)

    def _smoothed_noise(self) -> float:
        """Standard deviation of the EWMA of the log-loss, from the batch noise (the current
        stretch's when it is clearly larger than the long run's)."""
        alpha = self._ewma.alpha
        noise, recent = self._noise.std(), self._noise.std(last=RECENT_NOISE_POINTS)
        if recent > NEW_REGIME_FACTOR * noise:
            noise = recent
        return noise * math.sqrt(alpha / (2.0 - alpha))

    def _log_finding(self, smoothed: float, best: float, step: int) -> Finding:
        now, before = exp_or_inf(smoothed), exp_or_inf(best)
        detail = (
            f"best {before:.4f} at step {self._best_step:,}; smoothed {self.metric} "
            f"{now / before - 1:.0%} above it for {self._streak} points"
        )
        return self._finding(now, before, detail, step)

    def _median_finding(self, level: float, step: int) -> Finding:
        median = self._median
        assert median.best is not None
        detail = (
            f"median of the last {median.window} {self.metric} values {level:.4g} is "
            f"{level / median.best:.1f} times its lowest {median.best:.4g} "
            f"(step {median.best_step:,})"
        )
        return self._finding(level, median.best, detail, step)

    def _additive_finding(self, smoothed: float, reference: float, step: int) -> Finding:
        times = (smoothed - reference) / self._spread()
        detail = (
            f"smoothed {self.metric} {smoothed:.4g} is {times:.0f} times its noise above its "
            f"lowest {reference:.4g} of the last {len(self._recent)} points, for "
            f"{self._streak} points"
        )
        return self._finding(smoothed, reference, detail, step)

    def _finding(self, value: float, expected: float, detail: str, step: int) -> Finding:
        return Finding(self.kind, "critical", self.metric, value, expected, detail, step)

    def state(self) -> dict[str, Any]:
        return {
            "ewma": self._ewma.state(),
            "previous": list(self._previous),
            "floor_ewma": self._floor_ewma.state(),
            "noise": self._noise.state(),
            "scale": self._scale.state(),
            "recent": self._recent.state(),
            "median": self._median.state(),
            "best": self._best,
            "best_step": self._best_step,
            "streak": self._streak,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self._ewma.restore(state["ewma"])
        if "previous" in state:
            self._previous = [float(v) for v in state["previous"]][-2:]
            self._floor_ewma.restore(state["floor_ewma"])
        else:  # saved before low outliers were looked for: the best's EWMA is the EWMA
            self._floor_ewma.restore(state["ewma"])
        self._noise.restore(state["noise"])
        if "scale" in state:  # saved before scales: judged on the log scale, as then
            self._scale.restore(state["scale"])
            self._recent.restore(state["recent"])
        if "median" in state:  # saved before the median reading: it starts afresh
            self._median.restore(state["median"])
        self._best = optional_float(state["best"])
        self._best_step = int(state.get("best_step", 0))
        self._streak = int(state["streak"])
