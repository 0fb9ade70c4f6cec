"""accuracy_drop: an accuracy falling several points below its recent best, in its own scale."""

from __future__ import annotations

import json
import random

import pytest
from fixtures.classification_logs import multiple_choice_run
from fixtures.loss_curves import BATCH_SIZES, CurveSpec, clean_points

from tunewatch.plugins.anomaly.accuracy import AccuracyDropDetector
from tunewatch.plugins.anomaly.base import Finding, Point
from tunewatch.plugins.anomaly.not_learning import LossProgress


def detector() -> AccuracyDropDetector:
    return AccuracyDropDetector(
        ("accuracy", "eval_accuracy"),
        drop_points=5.0,
        sigmas=8.0,
        window_points=200,
        alpha=0.1,
        warmup_points=20,
        eval_warmup_points=3,
        progress=LossProgress(
            min_improvement=0.05, points=100, evals=6, warmup_points=20, eval_warmup_points=3
        ),
    )


def accuracies(n: int, level: float, noise: float, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0.0, noise) for _ in range(n)]


def findings(
    values: list[float], metric: str = "accuracy", d: AccuracyDropDetector | None = None
) -> list[Finding]:
    d = d or detector()
    return [
        f
        for step, value in enumerate(values, start=1)
        for f in d.update(Point(step, {metric: value}, float(step)))
    ]


def test_a_drop_of_ten_points_in_a_fraction_metric_is_reported() -> None:
    values = accuracies(150, 0.70, 0.005)
    values[100:] = [v - 0.10 for v in values[100:]]
    found = findings(values)
    assert found and 101 <= found[0].step <= 110
    first = found[0]
    assert (first.kind, first.metric, first.severity) == ("accuracy_drop", "accuracy", "normal")
    assert first.expected == pytest.approx(0.70, abs=0.01)
    assert " points" not in first.detail  # a fraction has no percentage points


def test_a_percentage_metric_is_judged_in_percentage_points() -> None:
    values = accuracies(150, 70.0, 0.5)
    values[100:] = [v - 4.0 for v in values[100:]]  # 4 points: below the 5-point threshold
    assert findings(values) == []
    values[100:] = [v - 4.0 for v in values[100:]]  # now 8 points
    found = findings(values)
    assert found and "points below" in found[0].detail


def test_a_fraction_is_not_mistaken_for_a_percentage() -> None:
    # Five hundredths of a fraction is the threshold; 0.04 must not alert, 0.08 must.
    values = accuracies(150, 0.70, 0.002)
    values[100:] = [v - 0.04 for v in values[100:]]
    assert findings(values) == []
    values[100:] = [v - 0.04 for v in values[100:]]
    assert findings(values)


def test_eval_accuracy_is_judged_raw_after_a_few_evaluations() -> None:
    evals = [0.50, 0.60, 0.65, 0.68, 0.69, 0.60, 0.61]
    found = findings(evals, metric="eval_accuracy")
    assert [f.step for f in found] == [6, 7]


def test_a_rising_accuracy_is_never_a_drop() -> None:
    values = [0.3 + 0.4 * i / 500 for i in range(500)]
    assert findings(values) == []


@pytest.mark.parametrize("seed", range(6))
def test_accuracy_noise_on_a_run_that_learns_nothing_is_no_drop(seed: int) -> None:
    # Eval accuracy at chance, 25 % give or take 3 points: its recent best is a lucky draw.
    d = detector()
    assert [f for p in multiple_choice_run(seed=seed) for f in d.update(p)] == []


def test_once_the_loss_shows_learning_a_drop_is_reported() -> None:
    points = multiple_choice_run(learns_from=300, questions=2000, seed=1)
    broken = [
        Point(p.step, {**p.metrics, "eval_accuracy": p.metrics["eval_accuracy"] - 0.3}, p.time)
        if "eval_accuracy" in p.metrics and p.step >= 1500
        else p
        for p in points
    ]
    d = detector()
    assert [f.step for f in (f for p in broken for f in d.update(p))][:1] == [1500]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("percent", [False, True])
def test_no_false_alarm_on_clean_noisy_accuracies(batch_size: int, percent: bool) -> None:
    for seed in range(2):
        spec = CurveSpec(
            steps=3000, batch_size=batch_size, accuracy=True, percent=percent, seed=seed
        )
        d = detector()
        assert [f for p in clean_points(spec) for f in d.update(p)] == []


def test_state_round_trip_continues_identically() -> None:
    values = accuracies(300, 65.0, 2.0, seed=3)
    values[200:] = [v - 15.0 for v in values[200:]]
    straight = findings(values)
    first = detector()
    resumed = findings(values[:150], d=first)
    second = detector()
    second.restore(json.loads(json.dumps(first.state())))
    resumed += [
        f
        for step, value in enumerate(values[150:], start=151)
        for f in second.update(Point(step, {"accuracy": value}, float(step)))
    ]
    assert resumed == straight
    assert straight
