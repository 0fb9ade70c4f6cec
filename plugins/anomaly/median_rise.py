"""A sustained rise of the loss's rolling median: the labelling rule's reading of a divergence.

The EWMA test in `divergence` is fast and exact on a smooth curve, but it needs a warm-up and
a noise estimate, and both fail on a short, very noisy run: a 40-point log whose losses jump
between two levels (7 and 15) diverges inside the EWMA's warm-up, and its noise estimate is as
large as the rise. A median reads such a run as a person does: most of the last `w` losses now
sit at twice the level most of them sat at before.

This is rule 2 of bench/corpus/LABELLING.md, applied live:
- the level is the median of the last `w = max(MIN_WINDOW, n / WINDOW_FRACTION)` losses (`n`
  logged so far, at most `MAX_WINDOW`), from the `FIRST_POINT`th loss on;
- it rises when the level reaches `RISE_RATIO` times its lowest value so far, by at least
  `START_FRACTION` of the first level and `SIGMAS` robust standard deviations of the losses
  that made the lowest level (a lowest level made of scattered losses is a lucky draw);
- the rise is a divergence once it has held for `HOLD_POINTS` points, and lasts while the
  level stays `STAY_RATIO` times above the lowest (the rule's "stays at or above");
- a rise must start within the first `JUDGED_POINTS` losses: that is where the EWMA is blind
  (its warm-up, its noise estimate still unsettled), and where a run logged once per epoch
  spends its whole life.
The labelling rule also waits `w` more points to call the rise sustained; live, that would
tell a long run's divergence hundreds of points late, so `HOLD_POINTS` stands in for it.

It reads the losses as they are (the rule's ratios are on the logged values) and only a loss
judged on a log scale: an RL objective around zero has no ratio to speak of.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tunewatch.plugins.anomaly.rolling import (
    MAD_TO_Z,
    RollingWindow,
    median_absolute_deviation,
    optional_float,
)

MIN_WINDOW = 10
WINDOW_FRACTION = 10
# The rule's window grows with the run (n / 10); past this many losses a wider median is no
# steadier in practice, and each point costs O(window).
MAX_WINDOW = 200
FIRST_POINT = 5
RISE_RATIO = 1.5
START_FRACTION = 0.1
SIGMAS = 3.0
HOLD_POINTS = 5
STAY_RATIO = 1.3
# A rise is only looked for in the run's first this many losses. Past them the EWMA reading
# has the noise estimate it needs, and a median of a few dozen per-batch losses is fooled by
# a lucky stretch: a batch-16 loss whose 11-point median dips to 0.11 during easy batches and
# returns to its level of 0.3 "rises" 2.8 times (measured on the real corpus: three false
# divergences in one clean 3,643-point run, none of them in its first 100 points).
JUDGED_POINTS = 50


class MedianRise:
    """Whether the loss's rolling median has risen for good above its lowest level."""

    def __init__(self) -> None:
        self._losses = RollingWindow(MAX_WINDOW)  # the latest losses, in order
        self.count = 0
        self.start: float | None = None  # the first level
        self.best: float | None = None  # the lowest level so far
        self.best_step = 0
        self._best_losses: list[float] = []  # the losses that made it (their spread)
        self._best_spread: float | None = None  # robust SD of those, once asked for
        self.streak = 0
        self.rising = False  # the rise has held `HOLD_POINTS` and not fallen back since

    @property
    def window(self) -> int:
        return min(MAX_WINDOW, max(MIN_WINDOW, self.count // WINDOW_FRACTION))

    def push(self, value: float, step: int) -> float | None:
        """Feed one positive loss; the level while it is a divergence, else None."""
        if self.count >= JUDGED_POINTS and not self.rising:
            return None  # past the points where a rise is looked for: nothing left to do
        self.count += 1
        self._losses.push(value)
        if self.count < FIRST_POINT:
            return None
        level = self._losses.median(last=self.window)
        if self.start is None:
            self.start = level
        if self.best is None or level < self.best:
            self.best, self.best_step = level, step
            self._best_losses, self._best_spread = self._losses.values()[-self.window :], None
        if self.rising:
            self.rising = level >= STAY_RATIO * self.best
        else:
            self.streak = self.streak + 1 if self._risen(level) else 0
            self.rising = self.streak >= HOLD_POINTS
        if not self.rising:
            return None
        return level

    def _risen(self, level: float) -> bool:
        assert self.best is not None and self.start is not None
        rise = level - self.best
        # The cheap ratio tests first: the spread is a median of deviations, O(window).
        if level < RISE_RATIO * self.best or rise < START_FRACTION * self.start:
            return False
        return rise >= SIGMAS * self._spread()

    def _spread(self) -> float:
        """Robust standard deviation (1.4826 MAD) of the losses that made the lowest level."""
        if self._best_spread is None:
            self._best_spread = median_absolute_deviation(self._best_losses) / MAD_TO_Z
        return self._best_spread

    def state(self) -> dict[str, Any]:
        return {
            "values": self._losses.values(),
            "count": self.count,
            "start": self.start,
            "best": self.best,
            "best_step": self.best_step,
            "best_losses": list(self._best_losses),
            "streak": self.streak,
            "rising": self.rising,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self._losses.restore(state)
        self.count = int(state["count"])
        self.start = optional_float(state["start"])
        self.best = optional_float(state["best"])
        self.best_step = int(state["best_step"])
        self._best_losses = [float(v) for v in state["best_losses"]]
        self._best_spread = None
        self.streak = int(state["streak"])
        self.rising = bool(state["rising"])
