"""non_finite: NaN or Inf in a watched metric, reported on that very point (no warm-up).

A NaN loss or gradient norm means the weights are, or are about to be, garbage; there is nothing
to learn from a history first. Hugging Face's `logging_nan_inf_filter` (on by default) hides a
NaN *loss* from the log, which is why `grad_norm` is watched too: it is logged unfiltered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tunewatch.plugins.anomaly.base import Finding, Point


class NonFiniteDetector:
    kind = "non_finite"

    def __init__(self, metrics: tuple[str, ...]) -> None:
        self.metrics = metrics

    def update(self, point: Point) -> list[Finding]:
        findings: list[Finding] = []
        for metric in self.metrics:
            value = point.metrics.get(metric)
            if value is None or math.isfinite(value):
                continue
            findings.append(
                Finding(
                    kind=self.kind,
                    severity="critical",
                    metric=metric,
                    value=value,
                    expected=None,
                    detail=f"{metric} is {value} at step {point.step}",
                    step=point.step,
                )
            )
        return findings

    def state(self) -> dict[str, Any]:
        return {}  # stateless: each point is judged on its own

    def restore(self, state: Mapping[str, Any]) -> None:
        return None
