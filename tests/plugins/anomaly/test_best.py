"""best_model: a new best eval loss (or smoothed train loss without evaluation), not noise."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Collection

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


def test_nothing_after_a_nan_loss_is_announced_as_best() -> None:
    t = tracker()
    bests([Point(s, {"eval_loss": 3.0 - 0.1 * s}, 0.0) for s in range(5)], t)
    assert t.update(Point(5, {"loss": math.nan, "grad_norm": math.nan}, 0.0)) is None
    # Hugging Face logs a loss of 0.0 after a NaN step; that is no achievement.
    assert t.update(Point(6, {"eval_loss": 0.0}, 0.0)) is None
    assert t.update(Point(7, {"eval_loss": 1.0}, 0.0)) is None


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


def fp16_run(
    overflow_at: Collection[int] = (), nan_loss_at: Collection[int] = (), dead_from: int = 10**6
) -> list[Point]:
    """A Trainer's log of a mixed-precision fine-tune: the loss (4 decimals, as logged) and grad
    norm every 10 steps, an evaluation every 100. `overflow_at` steps log an Inf grad norm (a
    step GradScaler skipped), `nan_loss_at` steps a NaN loss and grad norm; from `dead_from`
    on the weights are NaN: NaN grad norms and eval losses, and 0.0 for the loss (Hugging
    Face's logging_nan_inf_filter)."""
    rng = random.Random(4)
    points = []
    for step in range(10, 2010, 10):
        level = 0.9 + 1.4 * math.exp(-step / 400)
        loss = round(level * math.exp(rng.gauss(0.0, 0.05)), 4)
        grad_norm = 1.5 * math.exp(rng.gauss(0.0, 0.2))
        eval_loss = round(1.05 * level, 4)
        if step in overflow_at:
            grad_norm = math.inf
        if step in nan_loss_at:
            loss, grad_norm = math.nan, math.nan
        if step >= dead_from:
            loss, grad_norm, eval_loss = 0.0, math.nan, math.nan
        points.append(Point(step, {"loss": loss, "grad_norm": grad_norm}, float(step)))
        if step % 100 == 0:
            points.append(Point(step, {"eval_loss": eval_loss}, float(step)))
    return points


def test_a_lone_fp16_overflow_does_not_end_best_model_tracking() -> None:
    # GradScaler skips the overflowing step: the weights are untouched, the loss keeps falling.
    found = bests(fp16_run(overflow_at={250}))
    assert [b.step for b in found] == [b.step for b in bests(fp16_run())]
    assert max(b.step for b in found) >= 1500


def test_nan_weights_end_best_model_tracking() -> None:
    found = bests(fp16_run(dead_from=250))
    assert found and max(b.step for b in found) < 250


def test_overflows_that_last_distrust_the_weights_until_the_run_is_healthy_again() -> None:
    t = tracker()
    assert bests([Point(s, {"eval_loss": 3.0 - 0.1 * s}, 0.0) for s in range(5)], t)
    for step in (5, 6, 7):  # the third non-finite grad norm in a row is critical
        assert t.update(Point(step, {"loss": 2.0, "grad_norm": math.inf}, 0.0)) is None
    assert t.update(Point(8, {"eval_loss": 1.0}, 0.0)) is None
    for step in (9, 10):
        assert t.update(Point(step, {"loss": 2.0, "grad_norm": 1.0}, 0.0)) is None
    assert t.update(Point(11, {"eval_loss": 0.9}, 0.0)) == NewBest(11, "eval_loss", 0.9, 2.6)
    # In a whole run: the same bests before and, in the end, the same last best.
    found = [b.step for b in bests(fp16_run(overflow_at={250, 260, 270}))]
    healthy = [b.step for b in bests(fp16_run())]
    assert [s for s in found if s < 250] == [s for s in healthy if s < 250]
    assert max(found) == max(healthy)


def test_after_a_nan_loss_only_a_healthy_run_with_a_clearly_better_model_has_a_best() -> None:
    # A NaN loss may have left NaN weights. A run that goes on logging finite losses and grad
    # norms has numbers for weights again; its next best must beat the one before the NaN.
    found = bests(fp16_run(nan_loss_at={450}))
    before = [b for b in found if b.step < 450]
    after = [b for b in found if b.step > 450]
    assert after and min(b.step for b in after) > 450 + 30
    assert after[0].previous == before[-1].value
    assert after[0].value < before[-1].value * 0.995


def test_the_zero_loss_logged_for_a_nan_step_is_no_best() -> None:
    # Hugging Face's logging_nan_inf_filter logs 0.0 for the loss; the grad norm shows the NaN.
    t = tracker()
    bests([Point(s, {"loss": 2.0 - 0.001 * s, "grad_norm": 1.0}, 0.0) for s in range(1, 60)], t)
    assert t.update(Point(60, {"loss": 0.0, "grad_norm": math.nan}, 0.0)) is None


def grpo_log(steps: int = 600, seed: int = 0) -> list[Point]:
    """TRL GRPOTrainer's log_history: a loss at the rounding floor of its 4 logged decimals,
    around zero (the policy-gradient term averages out), plus a KL term that grows."""
    rng = random.Random(seed)
    points = []
    for step in range(1, steps + 1):
        kl = 0.05 * (1.0 - math.exp(-step / 200)) * math.exp(rng.gauss(0.0, 0.3))
        loss = round(0.04 * kl + rng.gauss(0.0, 0.0002), 4)
        metrics = {
            "loss": loss,
            "reward": 0.4 + 0.3 * step / steps + rng.gauss(0.0, 0.05),
            "reward_std": 0.2 + rng.gauss(0.0, 0.02),
            "kl": kl,
            "grad_norm": 0.9 * math.exp(rng.gauss(0.0, 0.3)),
            "learning_rate": 1e-6,
        }
        points.append(Point(step, metrics, 10.0 * step))
    return points


def test_an_rl_objective_near_zero_announces_no_best_models() -> None:
    # A GRPO loss is no measure of the model: bests on it would be rounding and noise.
    assert bests(grpo_log()) == []
