"""Forecasts from recent samples: how fast a quantity climbs, and when it reaches its limit.

Pure arithmetic on (time, value) pairs, shared by the disk (bytes used) and memory (bytes used,
a trainer's RSS) watches.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

# Fewer samples than this make no slope: two points are a line through any noise.
MIN_POINTS = 3


class Series:
    """The (time, value) samples of one quantity within the last `window_s` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.points: deque[tuple[float, float]] = deque()

    def add(self, time: float, value: float) -> None:
        if not (math.isfinite(time) and math.isfinite(value)):
            return
        if self.points and time <= self.points[-1][0]:
            # The clock went back (or a repeat): a slope across it would be nonsense.
            self.points.clear()
        self.points.append((time, value))
        while self.points and self.points[0][0] < time - self.window_s:
            self.points.popleft()

    def slope_per_s(self) -> float | None:
        return slope_per_s(self.points)


def slope_per_s(points: Sequence[tuple[float, float]]) -> float | None:
    """The least-squares slope of value over time (units per second), or None when the
    points cannot tell one: fewer than `MIN_POINTS`, all at one time, or not finite."""
    if len(points) < MIN_POINTS:
        return None
    n = len(points)
    mean_t = math.fsum(t for t, _ in points) / n
    mean_v = math.fsum(v for _, v in points) / n
    # Centred sums: unix times squared would lose every digit that matters.
    spread = math.fsum((t - mean_t) ** 2 for t, _ in points)
    if not spread > 0:
        return None
    slope = math.fsum((t - mean_t) * (v - mean_v) for t, v in points) / spread
    return slope if math.isfinite(slope) else None


def seconds_until(current: float, limit: float, rate_per_s: float | None) -> float | None:
    """When a quantity at `current`, climbing at `rate_per_s`, reaches `limit`: 0 when it is
    there already, None when it is not climbing (or nothing is known)."""
    if current >= limit:
        return 0.0
    if rate_per_s is None or not rate_per_s > 0 or not math.isfinite(rate_per_s):
        return None
    eta = (limit - current) / rate_per_s
    return eta if math.isfinite(eta) else None
