"""non_finite: NaN or Inf in a watched metric, reported on that very point (no warm-up).

A NaN loss means the weights are, or are about to be, garbage; there is nothing to learn from a
history first: critical. Hugging Face's `logging_nan_inf_filter` (on by default) hides a NaN
*loss* from the log, which is why `grad_norm` is watched too: it is logged unfiltered. But fp16
training skips an overflowing step by design (GradScaler), logging an Inf/NaN grad norm for it
while the loss stays finite: one such point is `info`; it turns critical once it lasts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

from tunewatch.daemon.events import Severity
from tunewatch.plugins.anomaly.base import Finding, MetricPattern, Point, is_pattern


class NonFiniteDetector:
    kind = "non_finite"

    def __init__(self, metrics: tuple[str, ...], persist_points: int = 3) -> None:
        self.metrics = tuple(m for m in metrics if not is_pattern(m))
        self._patterns = MetricPattern(tuple(m for m in metrics if is_pattern(m)))
        self.persist_points = max(1, persist_points)
        self._streak: dict[str, int] = {}  # metric -> consecutive non-finite points

    def update(self, point: Point) -> list[Finding]:
        findings: list[Finding] = []
        for metric in itertools.chain(self.metrics, self._patterns.matching(point)):
            value = point.metrics.get(metric)
            if value is None:
                continue
            if math.isfinite(value):
                self._streak.pop(metric, None)
                continue
            streak = self._streak[metric] = self._streak.get(metric, 0) + 1
            findings.append(self._finding(point, metric, value, streak))
        return findings

    def _finding(self, point: Point, metric: str, value: float, streak: int) -> Finding:
        loss_finite = math.isfinite(point.metrics.get("loss", 0.0))
        severity: Severity
        if is_loss(metric) or not loss_finite or streak >= self.persist_points:
            severity, detail = "critical", f"{metric} is {value} at step {point.step}"
            if not is_loss(metric) and streak > 1:
                detail += f" ({streak} logged points in a row)"
        else:
            severity = "info"
            detail = (
                f"{metric} is {value} at step {point.step} with a finite loss: an overflowing "
                "step that mixed precision skips (critical if it goes on)"
            )
        return Finding(
            kind=self.kind,
            severity=severity,
            metric=metric,
            value=value,
            expected=None,
            detail=detail,
            step=point.step,
        )

    def state(self) -> dict[str, Any]:
        return {"streak": dict(self._streak)}

    def restore(self, state: Mapping[str, Any]) -> None:
        self._streak = {str(k): int(v) for k, v in state.get("streak", {}).items()}


def is_loss(metric: str) -> bool:
    """A training or evaluation loss (as opposed to a grad norm, a learning rate...)."""
    return metric == "loss" or metric.endswith("_loss")
