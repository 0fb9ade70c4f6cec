"""loss_spike: one point far above the metric's recent level.

Two tests must agree (robust z AND a ratio guard), and a third fires alone:
- a robust z-score in the spirit of Iglewicz & Hoaglin's modified z, 0.6745 * (x - median) /
  MAD: on log values (batch-loss noise is multiplicative), the level is the median of the last
  `window_points` values and the spread comes from the MAD of successive differences over a
  longer stretch (see `DiffNoise`), so neither a decaying trend nor a short window's luck
  moves the threshold;
- the value is at least `min_rise` (relative) above the median, so that a very smooth curve
  does not alert on a rise nobody would call a spike;
- a hard ratio, as in Megatron-LM's spiky-loss check (10x): a value that many times above the
  median is alerted whatever the noise.
A loss judged on an additive scale (`LossScale`: an RL objective around zero, a loss at its
rounding floor) has no level to be relative to: there a spike is a rise above the median of
`ratio` times the metric's spread (the noise of its successive differences or the MAD of the
window, whichever is larger, and at least its rounding floor). That is Megatron's guard with
the spread for a unit: a GRPO loss that jumps from 0.0002 to 0.05 is a spike, one that wanders
from 0.0001 to 0.0009 is not.

A spike that comes back is a bad batch: the run shrugs it off, and a person told at 3 a.m. could
have done nothing. So the spike itself is `info` (recorded, never pushed), and only a spike that
does not recover is `critical`: when the `recover_points` points after it all stay above the
spike threshold's floor (`min_rise` above the level before it, or for an additive scale half the
spike's threshold), the loss has moved to a new level and the run needs a look. "All" forgives
one lucky batch (the second-lowest of three or more points is judged): a median says "mostly
up", and a forecasting loss of 1e-6 that stays at 3x for five points after a 150x batch, then
settles back, is a bad batch's wake, not a new level (two false pushes on real Lightning runs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from tunewatch.plugins.anomaly.base import Finding, Point, nan_stand_in
from tunewatch.plugins.anomaly.rolling import MAD_TO_Z, DiffNoise, LossScale, RollingWindow

# Fewer points than this make the median meaningless, whatever the warm-up says.
MIN_WINDOW = 3
# A spike has not recovered when the median of the points after it is this many times the
# loss's noise (per point, log scale) above the level before it: the median of 5 points strays
# by about 0.56 of that noise, so 2 is over 3.5 of its own standard deviations.
RECOVERY_SIGMAS = 2.0
MAX_LOG_RISE = 700.0  # (math.exp overflows past ~709)


class LossSpikeDetector:
    kind = "loss_spike"

    def __init__(
        self,
        metric: str,
        *,
        window_points: int,
        warmup_points: int,
        mad_z: float,
        min_rise: float,
        ratio: float,
        recover_points: int,
    ) -> None:
        self.metric = metric
        self.recover_points = max(1, recover_points)
        self.warmup_points = warmup_points
        self.mad_z = mad_z
        self.min_rise = min_rise
        self.ratio = ratio
        self._window = RollingWindow(window_points)
        self._noise = DiffNoise()
        self._scale = LossScale()
        self._seen = 0
        self._pending: _Pending | None = None  # the last spike, until it recovers or not

    def update(self, point: Point) -> list[Finding]:
        value = point.finite(self.metric)
        if value is None or nan_stand_in(point, value):
            return []
        if self._scale.push(value):
            self._noise = DiffNoise()  # differences of logs say nothing of an additive noise
        finding = None
        if self._pending is not None:
            finding = self._watch(self._pending, value, point.step)
        if finding is None and self._seen >= self.warmup_points and len(self._window) >= MIN_WINDOW:
            finding = self._judge(value, point.step)
        # The spike itself enters the window: the median shrugs it off, and a lasting shift in
        # level becomes the new normal (a sustained rise is divergence's business).
        self._window.push(value)
        self._noise.push(value if self._scale.additive else math.log(value))
        self._seen += 1
        return [finding] if finding is not None else []

    def _judge(self, value: float, step: int) -> Finding | None:
        level = self._window.median()
        if self._scale.additive:
            return self._judge_additive(value, level, step)
        if value > self.ratio * level:
            why = f"{value / level:.1f}x its recent median"
            return self._spike(value, level, self._recovered_below(level), step, why)
        if value <= level * (1.0 + self.min_rise):
            return None
        noise = self._noise.std()
        # A perfectly flat history (noise 0) makes any rise past the ratio guard an outlier.
        z = math.inf if noise == 0.0 else math.log(value / level) / noise
        if z <= self.mad_z:
            return None
        why = f"{z:.1f} robust sigmas above its recent median"
        return self._spike(value, level, self._recovered_below(level), step, why)

    def _recovered_below(self, level: float) -> float:
        """Under this, the median of the points after a spike says the loss came back: within
        `min_rise` of the level before, or within its noise when that is wider (a median of a
        few noisy points strays from the level by chance)."""
        log_rise = max(math.log1p(self.min_rise), RECOVERY_SIGMAS * self._noise.std())
        return level * math.exp(min(log_rise, MAX_LOG_RISE))

    def _judge_additive(self, value: float, level: float, step: int) -> Finding | None:
        rise = value - level
        # (The noise estimate, O(window), is only needed once the cheap test passes.)
        if rise <= self.ratio * self._scale.floor:
            return None
        # The window's own spread too: a loss whose noise grows with its level (a KL term)
        # has outgrown the older differences, and only the last points show by how much.
        spread = max(self._noise.std(), self._window.mad() / MAD_TO_Z, self._scale.floor)
        if rise <= self.ratio * spread:
            return None
        why = f"{rise / spread:.0f} times its usual spread ({spread:.2g}) above its recent median"
        recovered_below = level + 0.5 * self.ratio * spread
        return self._spike(value, level, recovered_below, step, why)

    def _spike(
        self, value: float, level: float, recovered_below: float, step: int, why: str
    ) -> Finding:
        if self._pending is None:  # a second spike while the first is watched is the same one
            self._pending = _Pending(step, value, level, recovered_below, [])
        return Finding(
            kind=self.kind,
            severity="info",
            metric=self.metric,
            value=value,
            expected=level,
            detail=f"{self.metric} {value:.4g} at step {step} is {why} {level:.4g}",
            step=step,
        )

    def _watch(self, pending: _Pending, value: float, step: int) -> Finding | None:
        """The spike's verdict once `recover_points` points followed it: nothing if the loss
        came back; critical if it stayed up, and on every point after while it stays up and
        the rolling median has not made the new level the normal one."""
        pending.after.append(value)
        del pending.after[: -self.recover_points]
        if len(pending.after) < self.recover_points:
            return None
        now = _stayed_at(pending.after)
        # Back under the threshold, or the new level is the normal now (the rolling median
        # caught up with it): either way no longer a spike (a sustained rise is divergence's).
        if now <= pending.recovered_below or self._window.median() > pending.recovered_below:
            self._pending = None
            return None
        return Finding(
            kind=self.kind,
            severity="critical",
            metric=self.metric,
            value=now,
            expected=pending.level,
            detail=(
                f"{self.metric} jumped to {pending.value:.4g} at step {pending.step} from its "
                f"recent median {pending.level:.4g} and has not come back: the last "
                f"{len(pending.after)} points stayed at {now:.4g} or above (step {step})"
            ),
            step=step,
        )

    def state(self) -> dict[str, Any]:
        return {
            "window": self._window.state(),
            "noise": self._noise.state(),
            "scale": self._scale.state(),
            "seen": self._seen,
            "pending": None if self._pending is None else asdict(self._pending),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self._window.restore(state["window"])
        self._noise.restore(state["noise"])
        if "scale" in state:  # saved before scales: judged on the log scale, as then
            self._scale.restore(state["scale"])
        self._seen = int(state["seen"])
        pending = state.get("pending")  # (absent from states saved before spikes were watched)
        self._pending = None if pending is None else _Pending(**pending)


def _stayed_at(after: list[float]) -> float:
    """The level all the points after a spike stayed at, but for one lucky batch: the
    second-lowest of three or more, else the lowest."""
    if len(after) >= 3:
        return sorted(after)[1]
    return min(after)


@dataclass(slots=True)
class _Pending:
    """A spike watched for recovery: where it was, the level before it, the points since."""

    step: int
    value: float
    level: float
    recovered_below: float
    after: list[float]
