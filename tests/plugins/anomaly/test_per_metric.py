"""PerMetric: a detector for each metric a pattern matches, each with a state of its own."""

from __future__ import annotations

import json

from tunewatch.plugins.anomaly.base import Detector, Finding, Point
from tunewatch.plugins.anomaly.per_metric import MAX_METRICS, PerMetric
from tunewatch.plugins.anomaly.spike import LossSpikeDetector


def spikes(metric: str) -> Detector:
    return LossSpikeDetector(
        metric,
        window_points=10,
        warmup_points=3,
        mad_z=5.0,
        min_rise=0.5,
        ratio=10.0,
        recover_points=2,
    )


def evals(values: dict[str, list[float]]) -> list[Point]:
    """One evaluation per step, of every dataset named in `values`."""
    steps = len(next(iter(values.values())))
    return [
        Point(100 * (i + 1), {name: v[i] for name, v in values.items()}, float(i))
        for i in range(steps)
    ]


def feed(detector: Detector, points: list[Point]) -> list[Finding]:
    return [f for p in points for f in detector.update(p)]


def test_each_matching_metric_is_judged_on_its_own_history() -> None:
    family = PerMetric("loss_spike", "eval_*_loss", spikes)
    # g1's level is g0's spike: judged together, neither would be told apart.
    g0 = [1.0, 0.98, 0.97, 0.96, 0.95, 0.95, 3.0, 0.94]
    g1 = [3.1, 3.05, 3.0, 2.98, 2.97, 2.96, 2.95, 2.94]
    points = evals({"eval_g0_loss": g0, "eval_g1_loss": g1, "eval_loss": g1})
    found = feed(family, points)
    assert [(f.metric, f.step) for f in found] == [("eval_g0_loss", 700)]


def test_the_family_resumes_from_json_exactly() -> None:
    g0 = [1.0, 0.98, 0.97, 0.96, 0.95, 0.95, 3.0, 0.94, 0.93, 2.8]
    g1 = [2.0, 1.9, 1.85, 1.8, 1.8, 1.79, 1.78, 5.0, 1.77, 1.76]
    points = evals({"eval_g0_loss": g0, "eval_g1_loss": g1})
    straight = feed(PerMetric("loss_spike", "eval_*_loss", spikes), points)
    first = PerMetric("loss_spike", "eval_*_loss", spikes)
    resumed = feed(first, points[:5])
    second = PerMetric("loss_spike", "eval_*_loss", spikes)
    second.restore(json.loads(json.dumps(first.state())))
    resumed += feed(second, points[5:])
    assert resumed == straight
    assert len(straight) == 3


def test_a_pattern_judges_a_bounded_number_of_metrics() -> None:
    family = PerMetric("loss_spike", "*", spikes)
    family.update(Point(1, {f"m{i}": 1.0 for i in range(MAX_METRICS + 10)}, 0.0))
    assert len(family.state()) == MAX_METRICS
