"""best_model: a new best eval loss (or smoothed train loss without evaluation), not noise."""

from __future__ import annotations

import itertools
import json
import math
import random

from fixtures.loss_curves import CurveSpec, clean_points

from tunewatch.plugins.anomaly.base import NewBest, Point
from tunewatch.plugins.anomaly.best import BestModelTracker


def tracker() -> BestModelTracker:
    return BestModelTracker(min_improvement=0.005, alpha=0.1, warmup_points=20)


def bests(points: list[Point], t: BestModelTracker | None = None) -> list[NewBest]:
    t = t or tracker()
    return [b for p in points if (b := t.update(p)) is not None]


def test_each_lower_eval_loss_is_a_new_best_with_the_previous_value() -> None:
    points = [Point(s, {"eval_loss": v}, 0.0) for s, v in [(10, 2.0), (20, 1.5), (30, 1.2)]]
    found = bests(points)
    assert [(b.step, b.metric, b.value, b.previous) for b in found] == [
        (10, "eval_loss", 2.0, None),
        (20, "eval_loss", 1.5, 2.0),
        (30, "eval_loss", 1.2, 1.5),
    ]


def test_an_improvement_smaller_than_the_minimum_is_not_a_new_best() -> None:
    points = [Point(s, {"eval_loss": 1.0 - 0.001 * s}, 0.0) for s in range(10)]
    # 0.1% per evaluation: the best is re-announced only every ~0.5% of improvement.
    found = bests(points)
    assert [b.step for b in found] == [0, 6]


def test_without_evaluation_the_smoothed_train_loss_decides_after_the_warm_up() -> None:
    rng = random.Random(0)
    points = [
        Point(s, {"loss": (1.0 + 2.0 * math.exp(-s / 100)) * math.exp(rng.gauss(0, 0.2))}, 0.0)
        for s in range(1, 501)
    ]
    found = bests(points)
    assert found[0].step == 20 and found[0].metric == "loss"
    assert all(b.value < b.previous * 0.995 for b in found[1:] if b.previous is not None)
    # Noise of 20% per point would make a raw-loss tracker announce dozens of lucky dips.
    assert len(found) < 150
    assert all(later.step > earlier.step for earlier, later in itertools.pairwise(found))


def test_the_eval_loss_takes_over_once_it_appears() -> None:
    points = [Point(s, {"loss": 3.0 - 0.01 * s}, 0.0) for s in range(1, 51)]
    points.append(Point(50, {"eval_loss": 2.9}, 0.0))
    points += [Point(s, {"loss": 1.0}, 0.0) for s in range(51, 100)]
    found = bests(points)
    assert found[-1] == NewBest(step=50, metric="eval_loss", value=2.9, previous=None)
    assert {b.metric for b in found[:-1]} == {"loss"}


def test_nothing_after_a_nan_is_announced_as_best() -> None:
    t = tracker()
    bests([Point(s, {"eval_loss": 3.0 - 0.1 * s}, 0.0) for s in range(5)], t)
    assert t.update(Point(5, {"loss": 2.0, "grad_norm": math.nan}, 0.0)) is None
    # Hugging Face logs a loss of 0.0 after a NaN step; that is no achievement.
    assert t.update(Point(6, {"eval_loss": 0.0}, 0.0)) is None


def test_once_the_run_evaluates_only_eval_losses_are_bests() -> None:
    spec = CurveSpec(steps=2000, batch_size=4, eval_every=50, seed=1)
    found = bests(clean_points(spec))
    first_eval = next(i for i, b in enumerate(found) if b.metric == "eval_loss")
    assert {b.metric for b in found[:first_eval]} == {"loss"}  # before the first evaluation
    assert {b.metric for b in found[first_eval:]} == {"eval_loss"}
    assert len(found) - first_eval <= 2000 // 50


def test_state_round_trip_continues_identically() -> None:
    points = clean_points(CurveSpec(steps=600, batch_size=2, eval_every=0, seed=3))
    straight = bests(points)
    first = tracker()
    resumed = bests(points[:300], first)
    second = tracker()
    second.restore(json.loads(json.dumps(first.state())))
    resumed += bests(points[300:], second)
    assert resumed == straight
    assert len(straight) > 3
