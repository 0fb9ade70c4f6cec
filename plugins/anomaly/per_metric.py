"""A detector for each metric whose name matches a pattern, made on that metric's first point.

A Trainer that evaluates several datasets logs `eval_<name>_loss` for each: the pattern
`eval_*_loss` judges every one of them as an eval loss, with a state of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tunewatch.plugins.anomaly.base import Detector, Finding, MetricPattern, Point

# Metrics judged per pattern at most: a pattern as wide as `*` must not grow without bound.
MAX_METRICS = 64


class PerMetric:
    """Detectors of one kind, one per matching metric, built by `make(metric)`."""

    def __init__(self, kind: str, pattern: str, make: Callable[[str], Detector]) -> None:
        self.kind = kind
        self._pattern = MetricPattern((pattern,))
        self._make = make
        self._detectors: dict[str, Detector] = {}

    def update(self, point: Point) -> list[Finding]:
        findings: list[Finding] = []
        for metric in self._pattern.matching(point):
            detector = self._detector(metric)
            if detector is not None:
                findings.extend(detector.update(point))
        return findings

    def _detector(self, metric: str) -> Detector | None:
        detector = self._detectors.get(metric)
        if detector is None and len(self._detectors) < MAX_METRICS:
            detector = self._detectors[metric] = self._make(metric)
        return detector

    def state(self) -> dict[str, Any]:
        return {metric: detector.state() for metric, detector in self._detectors.items()}

    def restore(self, state: Mapping[str, Any]) -> None:
        self._detectors = {}
        for metric, saved in state.items():
            detector = self._detector(str(metric))
            if detector is not None:
                detector.restore(saved)
