"""zscore: a configured metric leaving its rolling band, gradient-norm outliers by default."""

from __future__ import annotations

import json
import math
import random

import pytest
from fixtures.loss_curves import BATCH_SIZES, CurveSpec, clean_points

from tunewatch.daemon.events import Severity
from tunewatch.plugins.anomaly.base import Finding, Point
from tunewatch.plugins.anomaly.zscore import ZScoreDetector


def detector(severity: Severity = "normal", metric: str = "grad_norm") -> ZScoreDetector:
    return ZScoreDetector(
        metric, window_points=100, warmup_points=50, sigmas=5.0, severity=severity
    )


def grad_norms(n: int, sigma: float = 0.2, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [1.5 * math.exp(rng.gauss(0.0, sigma)) for _ in range(n)]


def findings(values: list[float], d: ZScoreDetector | None = None) -> list[Finding]:
    d = d or detector()
    return [
        f
        for step, value in enumerate(values, start=1)
        for f in d.update(Point(step, {"grad_norm": value}, float(step)))
    ]


def test_a_gradient_norm_outlier_is_reported_with_the_configured_severity() -> None:
    values = grad_norms(200)
    values[120] *= 8.0
    found = findings(values, detector(severity="critical"))
    assert [(f.kind, f.metric, f.step, f.severity) for f in found] == [
        ("zscore", "grad_norm", 121, "critical")
    ]
    assert found[0].expected == pytest.approx(1.5, rel=0.1)
    assert "standard deviations above" in found[0].detail


def test_a_collapse_below_the_band_is_reported_too() -> None:
    values = grad_norms(200)
    values[150] = 0.01
    assert [f.step for f in findings(values)] == [151]
    assert "below" in findings(values)[0].detail


def test_the_warm_up_is_not_judged() -> None:
    values = grad_norms(60)
    values[40] *= 100.0
    assert findings(values) == []


def test_metrics_that_can_be_negative_are_judged_on_the_raw_scale() -> None:
    rng = random.Random(2)
    values = [rng.gauss(0.0, 1.0) for _ in range(200)]
    values[150] = 12.0
    d = detector(metric="reward")
    found = [f for s, v in enumerate(values) for f in d.update(Point(s, {"reward": v}, 0.0))]
    assert [f.step for f in found] == [150]


def test_a_constant_metric_has_no_band_to_leave() -> None:
    assert findings([1.0] * 100 + [1.0]) == []


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_false_alarm_on_clean_gradient_norms(batch_size: int, seed: int) -> None:
    spec = CurveSpec(steps=3000, batch_size=batch_size, eval_every=0, seed=seed)
    d = detector()
    assert [f for p in clean_points(spec) for f in d.update(p)] == []


def test_state_round_trip_continues_identically() -> None:
    values = grad_norms(300, seed=4)
    values[100] *= 10.0
    values[250] *= 10.0
    straight = findings(values)
    first = detector()
    resumed = findings(values[:180], first)
    second = detector()
    second.restore(json.loads(json.dumps(first.state())))
    resumed += [
        f
        for step, value in enumerate(values[180:], start=181)
        for f in second.update(Point(step, {"grad_norm": value}, float(step)))
    ]
    assert resumed == straight
    assert [f.step for f in straight] == [101, 251]
