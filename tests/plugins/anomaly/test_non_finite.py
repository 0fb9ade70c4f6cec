"""non_finite: a NaN or Inf is reported on the very point that carries it, warm-up or not."""

from __future__ import annotations

import math

import pytest

from tunewatch.plugins.anomaly.base import Point
from tunewatch.plugins.anomaly.non_finite import NonFiniteDetector

WATCHED = ("loss", "eval_loss", "grad_norm")


@pytest.mark.parametrize("metric", WATCHED)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_the_first_point_of_a_run_is_already_judged(metric: str, value: float) -> None:
    findings = NonFiniteDetector(WATCHED).update(Point(1, {metric: value}, 0.0))
    assert [(f.kind, f.metric, f.severity, f.step) for f in findings] == [
        ("non_finite", metric, "critical", 1)
    ]
    assert str(value) in findings[0].detail


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


def test_its_state_is_empty_and_restores() -> None:
    detector = NonFiniteDetector(WATCHED)
    detector.restore(detector.state())
    assert detector.state() == {}
