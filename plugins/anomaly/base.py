"""What every detector sees and says: points in, findings out; state that survives a restart."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from tunewatch.daemon.events import Severity


@dataclass(frozen=True, slots=True)
class Point:
    """One logged point of one run, as the detectors see it."""

    step: int
    metrics: Mapping[str, float]
    time: float

    def finite(self, metric: str) -> float | None:
        """The metric's value when the point carries it and it is a finite number."""
        value = self.metrics.get(metric)
        return value if value is not None and math.isfinite(value) else None


def is_pattern(metric: str) -> bool:
    """Whether a configured metric name is a pattern, `*` standing for any text."""
    return "*" in metric


class MetricPattern:
    """Configured names with `*` in them (`eval_*_loss`: the eval loss of each dataset when a
    Trainer evaluates several), matched against the names a point carries."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns
        self._matches: dict[str, bool] = {}  # name -> whether it matches; a run has few names

    def matching(self, point: Point) -> Iterator[str]:
        """The names of `point` that match, in the point's order."""
        if not self.patterns:
            return
        for name in point.metrics:
            matches = self._matches.get(name)
            if matches is None:
                matches = self._matches[name] = any(
                    fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns
                )
            if matches:
                yield name


def nan_stand_in(point: Point, value: float) -> bool:
    """Whether `value`, a loss of `point`, is Hugging Face's stand-in for a NaN loss: 0.0,
    logged beside a NaN grad norm (`logging_nan_inf_filter`). It is no value of the loss."""
    return value == 0.0 and not math.isfinite(point.metrics.get("grad_norm", 0.0))


@dataclass(frozen=True, slots=True)
class Finding:
    """A detector's verdict on one point: the condition `kind` holds for `metric` right now.

    Detectors report a condition on every point while it holds; the `AlertGate` turns that
    level into one alert, counted repeats, and one recovery.
    """

    kind: str
    severity: Severity
    metric: str
    value: float
    expected: float | None
    detail: str
    step: int


@dataclass(frozen=True, slots=True)
class NewBest:
    """A new best model by `metric` (lower is better for losses)."""

    step: int
    metric: str
    value: float
    previous: float | None


class Detector(Protocol):
    """Plain, synchronous, per-run streaming code: O(1) or O(window) per point."""

    kind: str

    def update(self, point: Point) -> list[Finding]:
        """Feed one point; return the conditions that hold at this point."""
        ...

    def state(self) -> dict[str, Any]:
        """Everything needed to continue after a restart, as JSON-serialisable data."""
        ...

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from what `state()` returned."""
        ...


@runtime_checkable
class JudgedAtEnd(Protocol):
    """A detector with something to say once its run has ended (it finished, or went silent):
    what needs the hindsight of the end. Called once per end, after the run's last point."""

    def end_may_tell(self) -> bool:
        """Whether `at_end` could find anything if the run ended now: O(1), asked after every
        batch of points (a run whose end can tell nothing is not judged)."""
        ...

    def at_end(self, step: int) -> list[Finding]:
        """The conditions the end reveals; `step` is the run's last."""
        ...
