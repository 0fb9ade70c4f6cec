"""Small streaming statistics whose state is plain JSON: rolling window, EWMA, noise estimate.

Detectors keep these per metric; `state()`/`restore()` let a restarted daemon continue
exactly where it stopped (floats survive a JSON round trip bit for bit).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

# Iglewicz & Hoaglin (1993): 0.6745 is the 0.75 quantile of the standard normal, so
# 0.6745 * (x - median) / MAD is a z-score for Gaussian data that a few outliers cannot inflate.
MAD_TO_Z = 0.6745


class RollingWindow:
    """The last `size` values, with order statistics computed on demand (O(size) per call)."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._values: deque[float] = deque(maxlen=self.size)

    def __len__(self) -> int:
        return len(self._values)

    def push(self, value: float) -> None:
        self._values.append(value)

    def values(self) -> list[float]:
        return list(self._values)

    def median(self, last: int | None = None) -> float:
        """The median (of the `last` values only, when given)."""
        return statistics.median(self._values if last is None else self.values()[-last:])

    def mad(self, last: int | None = None) -> float:
        """Median absolute deviation from the median (of the `last` values only, when given)."""
        return median_absolute_deviation(self._values if last is None else self.values()[-last:])

    def mean(self) -> float:
        return mean_std(self._values)[0]

    def std(self) -> float:
        """Sample standard deviation (0.0 for fewer than two values)."""
        return mean_std(self._values)[1]

    def max(self) -> float:
        return max(self._values)

    def min(self) -> float:
        return min(self._values)

    def state(self) -> dict[str, Any]:
        return {"values": list(self._values)}

    def restore(self, state: Mapping[str, Any]) -> None:
        # A window restored under a smaller configured size keeps only its newest values.
        self._values = deque((float(v) for v in state["values"]), maxlen=self.size)


def median_absolute_deviation(values: Sequence[float]) -> float:
    """The median of the values' distances from their median (MAD)."""
    centre = statistics.median(values)
    return statistics.median(abs(v - centre) for v in values)


def optional_float(value: Any) -> float | None:
    """A saved number that may be absent (None)."""
    return None if value is None else float(value)


class Ewma:
    """Exponentially weighted moving average, debiased as in Adam (Kingma & Ba 2015).

    The plain recurrence starts from the first value and lets it weigh (1 - alpha)^n for a long
    time; dividing by 1 - (1 - alpha)^n makes the early average the plain mean of the values so
    far, so one noisy first point does not become a "best" level to compare against.
    """

    def __init__(self, alpha: float) -> None:
        self.alpha = min(max(alpha, 1e-6), 1.0)
        self._raw = 0.0
        self._decay = 1.0  # (1 - alpha) ** count
        self.count = 0

    @property
    def mean(self) -> float | None:
        return None if self.count == 0 else self._raw / (1.0 - self._decay)

    def push(self, value: float) -> float:
        self.count += 1
        self._raw += self.alpha * (value - self._raw)
        self._decay *= 1.0 - self.alpha
        return self._raw / (1.0 - self._decay)

    def state(self) -> dict[str, Any]:
        return {"raw": self._raw, "decay": self._decay, "count": self.count}

    def restore(self, state: Mapping[str, Any]) -> None:
        self._raw = float(state["raw"])
        self._decay = float(state["decay"])
        self.count = int(state["count"])


class DiffNoise:
    """Robust standard deviation of a series' noise, from the MAD of successive differences.

    The MAD of the values themselves mixes a trend (a decaying loss) into the spread; successive
    differences remove any trend that is steady over a couple of points, and a median ignores the
    two large differences a spike creates. A difference of two independent noisy values has
    sqrt(2) times their noise. A few hundred differences make the estimate stable to ~10%: with
    a few dozen (the MAD is an inefficient estimator), thresholds in sigmas would wobble by ~25%.
    """

    def __init__(self, size: int = 200) -> None:
        self._diffs = RollingWindow(size)
        self._last: float | None = None

    def push(self, value: float) -> None:
        if self._last is not None:
            self._diffs.push(value - self._last)
        self._last = value

    def std(self, last: int | None = None) -> float:
        """The noise estimate (from the `last` differences only, when given: the current
        stretch's); 0.0 until there are a few differences."""
        if min(len(self._diffs), last or len(self._diffs)) < 3:
            return 0.0
        return self._diffs.mad(last) / MAD_TO_Z / math.sqrt(2.0)

    def state(self) -> dict[str, Any]:
        return {"diffs": self._diffs.state(), "last": self._last}

    def restore(self, state: Mapping[str, Any]) -> None:
        self._diffs.restore(state["diffs"])
        last = state["last"]
        self._last = None if last is None else float(last)


# A median of n noisy values strays by about this many times sigma / sqrt(n) (for normal noise
# it is sqrt(pi / 2) = 1.25 times the standard error of their mean).
MEDIAN_ERROR_FACTOR = 1.25


def median_difference_error(sigma: float, *counts: int) -> float:
    """Standard error of the difference of medians of `counts` values each, per-value noise
    `sigma`: how far apart two levels may sit by luck alone."""
    return MEDIAN_ERROR_FACTOR * sigma * math.sqrt(sum(1.0 / n for n in counts))


# Second differences below this many: their MAD is too unreliable (see `CurveNoise.std`).
ROBUST_SECOND_DIFFS = 8


class CurveNoise:
    """Robust standard deviation of a sparse series' noise, from its second differences.

    A few evaluations of a run follow a curve (falling, then turning up when it overfits):
    their first differences change along it, and `DiffNoise` reads that change as noise.
    Second differences, x[i+1] - 2 x[i] + x[i-1], remove any trend that is locally a straight
    line; for independent noise their spread is sqrt(6) times the noise.
    """

    def __init__(self, size: int) -> None:
        self._diffs = RollingWindow(size)
        self._last: list[float] = []

    def push(self, value: float) -> None:
        if len(self._last) == 2:
            self._diffs.push(value - 2.0 * self._last[1] + self._last[0])
        self._last = [*self._last[-1:], value]

    def std(self) -> float:
        """The noise estimate; 0.0 until there are a few second differences."""
        n = len(self._diffs)
        if n < 3:
            return 0.0
        if n < ROBUST_SECOND_DIFFS:
            # The MAD of a handful of values can be near 0 by chance; the plain standard
            # deviation cannot, and an outlier only makes it err on the cautious side.
            return self._diffs.std() / math.sqrt(6.0)
        return self._diffs.mad() / MAD_TO_Z / math.sqrt(6.0)

    def state(self) -> dict[str, Any]:
        return {"diffs": self._diffs.state(), "last": list(self._last)}

    def restore(self, state: Mapping[str, Any]) -> None:
        self._diffs.restore(state["diffs"])
        self._last = [float(v) for v in state["last"]][-2:]


# A value fewer than this many steps of its last logged digit away from zero is rounded by 10 %
# or more: its relative changes are the trainer's rounding (a loss logged with 4 decimals
# "triples" from 0.0001 to 0.0003), not the run's.
FLOOR_STEPS = 5
# Values before the last logged digit is known: one value is not enough, as a loss logged
# with 4 decimals may well be 0.5 (written "0.5"); 5 values all ending in 0 have a 1 in
# 100,000 chance.
FLOOR_VALUES = 5
# Values logged with more decimals than this are full precision: no rounding floor to learn.
_FULL_PRECISION_STEP = 1e-12


class LossScale:
    """Which scale a loss is judged on, decided by the values it has logged.

    A loss is a positive quantity with relative noise, judged on a log scale, until it logs
    zero, a negative value, or a value at its rounding floor (fewer than `FLOOR_STEPS` steps of
    the last digit it is logged with): RL objectives (GRPO, PPO) hover around zero and cross
    it. From then on it is judged on an additive scale, for good: a level near zero is no unit
    for a rise, and the floor is the smallest change worth a look.
    """

    def __init__(self) -> None:
        self.step = math.inf  # the finest last-digit step among the values logged
        self.count = 0
        self.additive = False

    @property
    def floor(self) -> float:
        """The smallest change that is not rounding (0.0 while none is known)."""
        return 0.0 if math.isinf(self.step) else FLOOR_STEPS * self.step

    def push(self, value: float) -> bool:
        """Note a finite value; True when it turns the scale additive."""
        self.count += 1
        if self._may_refine(value):
            # (Never below full precision: the floor of a tiny value would underflow to 0.)
            self.step = min(self.step, max(last_digit_step(value), _FULL_PRECISION_STEP))
        if self.additive or not self._at_floor(value):
            return False
        self.additive = True
        return True

    def _at_floor(self, value: float) -> bool:
        if value <= 0.0:
            return True
        return self.count >= FLOOR_VALUES and value < FLOOR_STEPS * self.step

    def _may_refine(self, value: float) -> bool:
        """Whether `value` may have a finer last digit than those before (the cheap test first:
        a loss logged with 4 decimals needs no decimal conversion once that is known)."""
        if math.isinf(self.step):
            return True
        return self.step > _FULL_PRECISION_STEP and value != round(value, _decimals(self.step))

    def state(self) -> dict[str, Any]:
        step = None if math.isinf(self.step) else self.step
        return {"step": step, "count": self.count, "additive": self.additive}

    def restore(self, state: Mapping[str, Any]) -> None:
        step = state["step"]
        self.step = math.inf if step is None else float(step)
        self.count = int(state["count"])
        self.additive = bool(state["additive"])


def last_digit_step(value: float) -> float:
    """The step of the last digit `value` is written with: 0.0113 -> 0.0001, 2.5 -> 0.1 (as is
    3.0: floats are written with a decimal)."""
    exponent = Decimal(repr(value)).as_tuple().exponent
    assert isinstance(exponent, int)  # a finite value
    # 1e+20 is written with one digit, but nothing is rounded to the nearest 1e20.
    return 10.0 ** min(exponent, -1)


def _decimals(step: float) -> int:
    return round(-math.log10(step))


def log_if_positive(values: Sequence[float]) -> list[float] | None:
    """Natural logs of `values`, or None when one of them is not positive.

    Batch losses and gradient norms are multiplicative and right-skewed: on a log scale their
    noise is close to symmetric, so one threshold in sigmas means the same at every level.
    """
    if not values or min(values) <= 0.0:
        return None
    return [math.log(v) for v in values]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0.0 for fewer than two values).

    Two plain passes: far cheaper than `statistics.stdev` (exact fractions), and unlike
    `math.fsum` or `**`, plain sums and products overflow to inf instead of raising.
    """
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) * (v - mean) for v in values) / (n - 1))


def exp_or_inf(value: float) -> float:
    """`math.exp`, but inf where it would raise: rounding can push a mean of the largest logs
    just past what a float holds."""
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf
