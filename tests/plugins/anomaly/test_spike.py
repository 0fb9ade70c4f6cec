"""loss_spike: one point far above the recent level; never the ordinary noise of a small batch."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace

import pytest
from fixtures.loss_curves import BATCH_SIZES, CurveSpec, clean_points
from fixtures.rl_logs import grpo_points, with_loss

from tunewatch.plugins.anomaly.base import Finding, Point
from tunewatch.plugins.anomaly.spike import LossSpikeDetector


def detector(metric: str = "loss", **overrides: float) -> LossSpikeDetector:
    params: dict[str, float] = {
        "window_points": 50,
        "warmup_points": 20,
        "mad_z": 5.0,
        "min_rise": 0.5,
        "ratio": 10.0,
        "recover_points": 5,
    }
    params.update(overrides)
    return LossSpikeDetector(
        metric,
        window_points=int(params["window_points"]),
        warmup_points=int(params["warmup_points"]),
        mad_z=params["mad_z"],
        min_rise=params["min_rise"],
        ratio=params["ratio"],
        recover_points=int(params["recover_points"]),
    )


def noisy(n: int, level: float = 2.0, noise: float = 0.05, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [level * (1.0 + rng.gauss(0.0, noise)) for _ in range(n)]


def feed(d: LossSpikeDetector, values: list[float], metric: str = "loss") -> list[Finding]:
    found: list[Finding] = []
    for step, value in enumerate(values, start=1):
        found.extend(d.update(Point(step, {metric: value}, float(step))))
    return found


def test_a_spike_after_the_warm_up_is_reported_on_its_point() -> None:
    values = noisy(100)
    values[60] *= 4.0
    findings = feed(detector(), values)
    # The loss came back at once: a bad batch, recorded (info), not worth a push.
    assert [(f.kind, f.step, f.severity) for f in findings] == [("loss_spike", 61, "info")]
    assert findings[0].expected == pytest.approx(2.0, rel=0.05)
    assert "robust sigmas above its recent median" in findings[0].detail


def test_nothing_is_judged_during_the_warm_up() -> None:
    values = noisy(30)
    values[10] *= 50.0
    assert feed(detector(), values) == []


def test_a_rise_that_is_many_sigmas_but_small_is_not_a_spike() -> None:
    # On a very smooth curve +30% is a huge z-score, but nobody would call it a spike.
    values = noisy(100, noise=0.005)
    values[60] *= 1.3
    assert feed(detector(), values) == []


def test_the_hard_ratio_fires_alone_even_on_a_very_noisy_curve() -> None:
    values = noisy(100, noise=0.6, seed=2)
    values = [abs(v) + 0.1 for v in values]
    values[70] = 40.0 * sorted(values[20:70])[25]
    findings = feed(detector(mad_z=1e9), values)
    assert [f.step for f in findings] == [71]
    assert "x its recent median" in findings[0].detail


def test_a_lasting_jump_stops_being_a_spike_once_it_is_the_new_level() -> None:
    values = noisy(60) + noisy(100, level=8.0, seed=1)
    found = feed(detector(), values)
    # Each point up is a spike (the gate makes them one episode) until five points say the
    # loss did not come back; from then on it is critical...
    assert [f.step for f in found if f.severity == "info"][:5] == list(range(61, 66))
    critical = [f for f in found if f.severity == "critical"]
    assert critical[0].step == 66 and "has not come back" in critical[0].detail
    # ...until the rolling median makes the new level the normal one: within half a window.
    assert max(f.step for f in found) < 61 + 30


def test_a_spike_that_does_not_come_back_is_critical_once_its_points_say_so() -> None:
    values = noisy(100)
    for i in range(60, 70):
        values[i] *= 3.0  # up for ten points: the five after the spike all stayed up
    values[63] /= 3.0  # one lucky batch among them does not make it a recovery
    found = feed(detector(), values)
    assert [(f.step, f.severity) for f in found][:4] == [
        (61, "info"),
        (62, "info"),
        (63, "info"),
        (65, "info"),
    ]
    critical = [f for f in found if f.severity == "critical"]
    assert critical[0].step == 66 and "stayed at" in critical[0].detail
    assert critical[0].expected == pytest.approx(2.0, rel=0.05)
    assert critical[0].value == pytest.approx(6.0, rel=0.15)


def test_a_spike_whose_wake_settles_within_its_points_stays_info() -> None:
    # A real forecasting run: one 150x batch, then three points at about 3x, then the old level.
    # The median of the five points after says "still up"; they did not all stay up.
    values = noisy(100)
    values[60] *= 150.0
    for i in range(61, 64):
        values[i] *= 3.0
    found = feed(detector(), values)
    assert found and {f.severity for f in found} == {"info"}


def test_spikes_of_a_noisy_loss_that_come_back_at_once_stay_info() -> None:
    # A forecasting run's loss: noise of a factor 2 or so, and 150x spikes every few dozen
    # points that are gone on the next point (a real Lightning log did exactly this).
    rng = random.Random(5)
    values = [1e-6 * math.exp(rng.gauss(0.0, 0.5)) for _ in range(600)]
    for i in range(100, 600, 37):
        values[i] *= 150.0
    found = feed(detector(), values)
    assert found and {f.severity for f in found} == {"info"}


def test_eval_loss_has_its_own_short_window() -> None:
    d = detector("eval_loss", window_points=10, warmup_points=3)
    evals = [3.0, 2.6, 2.4, 2.3, 2.25, 2.2, 6.5, 2.15]
    findings = feed(d, evals, metric="eval_loss")
    assert [(f.metric, f.step) for f in findings] == [("eval_loss", 7)]


def test_points_without_the_metric_or_with_non_finite_values_are_skipped() -> None:
    d = detector(warmup_points=0)
    for step in range(5):
        d.update(Point(step, {"loss": 2.0}, 0.0))
    assert d.update(Point(6, {"eval_loss": 100.0}, 0.0)) == []
    assert d.update(Point(7, {"loss": float("nan")}, 0.0)) == []
    assert d.update(Point(8, {"loss": 0.0}, 0.0)) == []


def test_the_zero_logged_for_a_nan_loss_leaves_the_loss_on_its_log_scale() -> None:
    values = noisy(100)
    d = detector()
    feed(d, values[:60])
    # Hugging Face's logging_nan_inf_filter: the loss of a NaN step is logged as 0.0, with
    # the NaN grad norm beside it. It is no value of the loss: a x3 spike is still one after.
    assert d.update(Point(61, {"loss": 0.0, "grad_norm": float("nan")}, 61.0)) == []
    assert [f.step for f in d.update(Point(62, {"loss": 3.0 * values[61]}, 62.0))] == [62]


def test_a_loss_at_its_rounding_floor_is_never_a_spike() -> None:
    # Logged with 4 decimals, 0.0001 -> 0.0003 is rounding, not a loss that tripled.
    values = [0.0001] * 60 + [0.0003, 0.0001, 0.0004, 0.0002, 0.0009]
    assert feed(detector(), values) == []


def test_an_rl_objective_that_jumps_far_beyond_its_spread_is_a_spike() -> None:
    d = detector()
    found = [f for p in with_loss(grpo_points(), 400, 0.05, 400) for f in d.update(p)]
    assert [(f.step, f.severity) for f in found] == [(400, "info")]
    assert "its usual spread" in found[0].detail


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_false_alarm_on_clean_noisy_curves(batch_size: int, seed: int) -> None:
    spec = CurveSpec(steps=2000, batch_size=batch_size, eval_every=100, seed=seed)
    loss, eval_loss = detector(), detector("eval_loss", window_points=10, warmup_points=3)
    for point in clean_points(spec):
        assert loss.update(point) == [], point
        assert eval_loss.update(point) == [], point


@pytest.mark.parametrize("log_every", [5, 10, 50])
def test_no_false_alarm_when_logging_every_few_steps(log_every: int) -> None:
    spec = CurveSpec(steps=5000, batch_size=1, log_every=log_every, eval_every=250, seed=4)
    d = detector()
    assert [f for p in clean_points(spec) for f in d.update(p)] == []


def test_state_round_trip_continues_identically() -> None:
    points = clean_points(replace(CurveSpec(steps=400, batch_size=2, seed=9), eval_every=0))
    spiky = [
        Point(p.step, {"loss": p.metrics["loss"] * (5.0 if p.step % 97 == 0 else 1.0)}, p.time)
        for p in points
    ]
    straight, resumed = detector(), detector()
    expected = [f for p in spiky for f in straight.update(p)]
    got = [f for p in spiky[:150] for f in resumed.update(p)]
    restored = detector()
    restored.restore(json.loads(json.dumps(resumed.state())))
    got += [f for p in spiky[150:] for f in restored.update(p)]
    assert got == expected
    assert len(expected) >= 3
