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
Losses are positive; zero or negative values are not judged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tunewatch.plugins.anomaly.base import Finding, Point
from tunewatch.plugins.anomaly.rolling import DiffNoise, RollingWindow

# Fewer points than this make the median meaningless, whatever the warm-up says.
MIN_WINDOW = 3


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
    ) -> None:
        self.metric = metric
        self.warmup_points = warmup_points
        self.mad_z = mad_z
        self.min_rise = min_rise
        self.ratio = ratio
        self._window = RollingWindow(window_points)
        self._noise = DiffNoise()
        self._seen = 0

    def update(self, point: Point) -> list[Finding]:
        value = point.finite(self.metric)
        if value is None or value <= 0.0:
            return []
        finding = None
        if self._seen >= self.warmup_points and len(self._window) >= MIN_WINDOW:
            finding = self._judge(value, point.step)
        # The spike itself enters the window: the median shrugs it off, and a lasting shift in
        # level becomes the new normal (a sustained rise is divergence's business).
        self._window.push(value)
        self._noise.push(math.log(value))
        self._seen += 1
        return [finding] if finding is not None else []

    def _judge(self, value: float, step: int) -> Finding | None:
        level = self._window.median()
        if value > self.ratio * level:
            return self._finding(value, level, step, f"{value / level:.1f}x its recent median")
        if value <= level * (1.0 + self.min_rise):
            return None
        noise = self._noise.std()
        # A perfectly flat history (noise 0) makes any rise past the ratio guard an outlier.
        z = math.inf if noise == 0.0 else math.log(value / level) / noise
        if z <= self.mad_z:
            return None
        return self._finding(value, level, step, f"{z:.1f} robust sigmas above its recent median")

    def _finding(self, value: float, level: float, step: int, why: str) -> Finding:
        return Finding(
            kind=self.kind,
            severity="critical",
            metric=self.metric,
            value=value,
            expected=level,
            detail=f"{self.metric} {value:.4g} at step {step} is {why} {level:.4g}",
            step=step,
        )

    def state(self) -> dict[str, Any]:
        return {"window": self._window.state(), "noise": self._noise.state(), "seen": self._seen}

    def restore(self, state: Mapping[str, Any]) -> None:
        self._window.restore(state["window"])
        self._noise.restore(state["noise"])
        self._seen = int(state["seen"])
