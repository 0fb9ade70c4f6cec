"""non_finite: a NaN or Inf is reported on the very point that carries it, warm-up or not."""

from __future__ import annotations

import math

import pytest

from tunewatch.plugins.anomaly.base import Point
from tunewatch.plugins.anomaly.non_finite import NonFiniteDetector

WATCHED = ("loss", "eval_loss", "grad_norm")


@pytest.mark.parametrize("metric", ["loss", "eval_loss"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_is_critical_on_the_first_point(metric: str, value: float) -> None:
    findings = NonFiniteDetector(WATCHED).update(Point(1, {metric: value}, 0.0))
    assert [(f.kind, f.metric, f.severity, f.step) for f in findings] == [
        ("non_finite", metric, "critical", 1)
    ]
    assert str(value) in findings[0].detail


def test_one_fp16_overflow_is_info_and_critical_once_it_lasts() -> None:
    """GradScaler skips an overflowing step and the Trainer logs its Inf grad norm."""
    detector = NonFiniteDetector(WATCHED, persist_points=3)
    severities = []
    for step, grad_norm in enumerate([math.inf, 0.8, math.inf, math.nan, math.inf, 0.9], 1):
        found = detector.update(Point(step, {"loss": 1.2, "grad_norm": grad_norm}, 0.0))
        severities.append(found[0].severity if found else None)
    assert severities == ["info", None, "info", "info", "critical", None]


def test_a_non_finite_grad_norm_with_a_non_finite_loss_is_critical() -> None:
    detector = NonFiniteDetector(WATCHED)
    found = detector.update(Point(3, {"loss": math.nan, "grad_norm": math.nan}, 0.0))
    assert {(f.metric, f.severity) for f in found} == {
        ("loss", "critical"),
        ("grad_norm", "critical"),
    }


def test_a_nan_grad_norm_is_caught_while_the_logged_loss_looks_fine() -> None:
    # Hugging Face's logging_nan_inf_filter logs a finite loss even when the step was NaN.
    detector = NonFiniteDetector(WATCHED)
    findings = detector.update(Point(41, {"loss": 4.1, "grad_norm": math.nan}, 0.0))
    assert [f.metric for f in findings] == ["grad_norm"]


def test_every_non_finite_metric_of_a_point_is_reported() -> None:
    detector = NonFiniteDetector(WATCHED)
    point = Point(7, {"loss": math.nan, "grad_norm": math.inf, "learning_rate": 1e-5}, 0.0)
    assert sorted(f.metric for f in detector.update(point)) == ["grad_norm", "loss"]


def test_finite_values_and_unwatched_metrics_are_not_findings() -> None:
    detector = NonFiniteDetector(WATCHED)
    assert detector.update(Point(1, {"loss": 1e30, "grad_norm": 0.0}, 0.0)) == []
    assert detector.update(Point(2, {"learning_rate": math.nan}, 0.0)) == []


def test_it_keeps_reporting_while_the_run_stays_nan() -> None:
    detector = NonFiniteDetector(WATCHED)
    reported = [bool(detector.update(Point(s, {"loss": math.nan}, 0.0))) for s in range(5)]
    assert reported == [True] * 5  # the gate, not the detector, turns this into one alert


def test_a_streak_survives_a_restart() -> None:
    detector = NonFiniteDetector(WATCHED, persist_points=2)
    detector.update(Point(1, {"loss": 1.0, "grad_norm": math.inf}, 0.0))
    restored = NonFiniteDetector(WATCHED, persist_points=2)
    restored.restore(detector.state())
    found = restored.update(Point(2, {"loss": 1.0, "grad_norm": math.inf}, 0.0))
    assert found[0].severity == "critical"
    assert NonFiniteDetector(WATCHED).state() == {"streak": {}}


def test_a_pattern_watches_each_metric_it_matches() -> None:
    # A Trainer evaluating several datasets logs eval_<name>_loss for each.
    detector = NonFiniteDetector(("loss", "eval_*_loss"))
    metrics = {"eval_g0_loss": 1.2, "eval_g1_loss": math.nan, "eval_g1_runtime": math.inf}
    found = detector.update(Point(100, metrics, 0.0))
    assert [(f.metric, f.severity) for f in found] == [("eval_g1_loss", "critical")]
