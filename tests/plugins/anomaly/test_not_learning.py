"""not_learning: a loss still where it started after a warm-up is told once; learning never."""

from __future__ import annotations

import json
import math
import random

import pytest
from fixtures.classification_logs import CHANCE, multiple_choice_run
from fixtures.loss_curves import BATCH_SIZES, CurveSpec, clean_points
from fixtures.rl_logs import grpo_points

from tunewatch.plugins.anomaly.base import Finding, Point
from tunewatch.plugins.anomaly.config import AnomalyConfig
from tunewatch.plugins.anomaly.gate import RunDetectors
from tunewatch.plugins.anomaly.not_learning import LossProgress, NotLearningDetector, Verdict


def detector() -> NotLearningDetector:
    return NotLearningDetector(
        LossProgress(
            min_improvement=0.05, points=100, evals=6, warmup_points=20, eval_warmup_points=3
        )
    )


def findings(points: list[Point], d: NotLearningDetector | None = None) -> list[Finding]:
    d = d or detector()
    return [f for p in points for f in d.update(p)]


def test_an_eval_loss_flat_at_chance_is_told_once_with_no_accuracy_noise() -> None:
    run = RunDetectors(AnomalyConfig())
    alerts = [a for p in multiple_choice_run(seed=1) for a in run.update(p).alerts]
    # Its eval accuracy wanders by 3 points around 25 %: a drop from a lucky best is no news.
    assert [(a.finding.kind, a.finding.metric, a.finding.severity, a.push) for a in alerts] == [
        ("not_learning", "eval_loss", "normal", True)
    ]
    first = alerts[0].finding
    # Judged once the run has 100 train points (step 1000) and 6 evaluations.
    assert first.step == 1000
    assert first.expected == pytest.approx(CHANCE, rel=0.01)
    assert "of where it started" in first.detail


def test_a_run_that_starts_learning_recovers() -> None:
    run = RunDetectors(AnomalyConfig())
    verdicts = [run.update(p) for p in multiple_choice_run(learns_from=1300, seed=2)]
    alerts = [a.finding for v in verdicts for a in v.alerts]
    recoveries = [r for v in verdicts for r in v.recoveries]
    assert [(f.kind, f.step) for f in alerts] == [("not_learning", 1000)]
    assert [(r.kind, r.push) for r in recoveries] == [("not_learning", True)]
    assert 1300 < recoveries[0].step <= 1600


def test_a_run_that_converged_before_its_first_evaluation_is_learning() -> None:
    # The eval loss is flat from its first value on, but the train loss fell from its start.
    rng = random.Random(3)
    points = []
    for step in range(10, 3001, 10):
        level = 1.1 + 1.2 * math.exp(-step / 60)
        points.append(Point(step, {"loss": level * math.exp(rng.gauss(0.0, 0.05))}, step))
        if step % 250 == 0:
            points.append(Point(step, {"eval_loss": 1.2 + rng.gauss(0.0, 0.003)}, step))
    assert findings(points) == []


def test_a_loss_that_rose_above_its_start_is_not_said_to_be_flat() -> None:
    rng = random.Random(4)
    values = [2.0 * (1.0 + 0.004 * i) * math.exp(rng.gauss(0.0, 0.02)) for i in range(300)]
    assert findings([Point(i, {"loss": v}, i) for i, v in enumerate(values)]) == []


def test_a_later_episode_is_recorded_not_pushed() -> None:
    rng = random.Random(6)
    # A dip of 5.3 %, too small to show learning beyond doubt, then back to the start.
    levels = [1.0] * 120 + [0.947] * 40 + [1.0] * 120
    values = [level * math.exp(rng.gauss(0.0, 0.01)) for level in levels]
    found = findings([Point(i, {"loss": v}, i) for i, v in enumerate(values)])
    first = [f for f in found if f.step < 120 + 40]
    later = [f for f in found if f.step >= 120 + 40]
    assert first and {f.severity for f in first} == {"normal"}
    assert max(f.step for f in first) < 120 + 30  # the dip ends the first episode
    assert later and {f.severity for f in later} == {"info"}


def test_an_rl_objective_around_zero_is_not_judged() -> None:
    # A GRPO loss is not meant to fall.
    progress = detector().progress
    for point in grpo_points():
        progress.update(point)
    assert progress.verdict() is Verdict.UNKNOWN


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("eval_every", [0, 50])
def test_no_false_alarm_on_clean_noisy_curves(batch_size: int, eval_every: int) -> None:
    for seed in range(3):
        # The slowest learner the synthetic runs hold: 20 % of its loss over a long run.
        spec = CurveSpec(
            steps=3000,
            batch_size=batch_size,
            eval_every=eval_every,
            start_loss=1.5,
            final_loss=1.2,
            decay=2.0,
            seed=seed,
        )
        assert findings(clean_points(spec)) == []


def test_state_round_trip_continues_identically() -> None:
    points = multiple_choice_run(learns_from=1300, seed=5)
    straight = findings(points)
    first = detector()
    resumed = findings(points[:150], first)
    second = detector()
    second.restore(json.loads(json.dumps(first.state())))
    resumed += findings(points[150:], second)
    assert resumed == straight
    assert straight


def test_a_loss_first_seen_mid_run_has_no_start_to_be_judged_against() -> None:
    # tunewatch started (or was upgraded) at step 50,000 of a run that learned long ago: its
    # loss is flat from then on, and that says nothing about whether the run learns.
    rng = random.Random(7)
    points = [
        Point(step, {"loss": 0.9 * math.exp(rng.gauss(0.0, 0.03))}, step)
        for step in range(50_000, 53_000, 10)
    ]
    assert findings(points) == []
    # The same flat loss from the run's first step is a run that does not learn.
    from_start = [Point(p.step - 50_000 + 10, p.metrics, p.time) for p in points]
    assert [f.kind for f in findings(from_start)][:1] == ["not_learning"]
