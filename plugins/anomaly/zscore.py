"""zscore: a configured metric (grad_norm by default) outside its rolling band mean ± k·std.

The band is computed on log values when the window and the value are positive: gradient norms
are log-normal-ish, so a band on the raw values would be crossed by their long right tail all
the time. The window holds the previous `window_points` values; the new one joins it afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tunewatch.daemon.events import Severity
from tunewatch.plugins.anomaly.base import Finding, Point
from tunewatch.plugins.anomaly.rolling import RollingWindow, exp_or_inf, mean_std

MIN_WINDOW = 3


class ZScoreDetector:
    kind = "zscore"

    def __init__(
        self,
        metric: str,
        *,
        window_points: int,
        warmup_points: int,
        sigmas: float,
        severity: Severity,
    ) -> None:
        self.metric = metric
        self.warmup_points = warmup_points
        self.sigmas = sigmas
        self.severity: Severity = severity
        self._window = RollingWindow(window_points)
        # The same values' logs (NaN for a non-positive one), kept to avoid recomputing them.
        self._logs = RollingWindow(window_points)
        self._seen = 0

    def update(self, point: Point) -> list[Finding]:
        value = point.finite(self.metric)
        if value is None:
            return []
        finding = None
        if self._seen >= self.warmup_points and len(self._window) >= MIN_WINDOW:
            finding = self._judge(value, point.step)
        self._window.push(value)
        self._logs.push(math.log(value) if value > 0.0 else math.nan)
        self._seen += 1
        return [finding] if finding is not None else []

    def _judge(self, value: float, step: int) -> Finding | None:
        on_log = value > 0.0 and self._window.min() > 0.0
        if on_log:
            mean, std = mean_std(self._logs.values())
            x = math.log(value)
        else:
            mean, std = mean_std(self._window.values())
            x = value
        if std == 0.0:
            return None  # a constant series has no band to leave
        z = (x - mean) / std
        if abs(z) <= self.sigmas:
            return None
        centre = exp_or_inf(mean) if on_log else mean
        side = "above" if z > 0 else "below"
        return Finding(
            kind=self.kind,
            severity=self.severity,
            metric=self.metric,
            value=value,
            expected=centre,
            detail=(
                f"{self.metric} {value:.4g} at step {step} is {abs(z):.1f} standard deviations "
                f"{side} its recent {'geometric ' if on_log else ''}mean {centre:.4g}"
            ),
            step=step,
        )

    def state(self) -> dict[str, Any]:
        return {"window": self._window.state(), "seen": self._seen}

    def restore(self, state: Mapping[str, Any]) -> None:
        self._window.restore(state["window"])
        self._logs = RollingWindow(self._window.size)
        for value in self._window.values():
            self._logs.push(math.log(value) if value > 0.0 else math.nan)
        self._seen = int(state["seen"])
