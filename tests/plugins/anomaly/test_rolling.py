"""Streaming statistics: the values detectors rely on, and state that survives JSON."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from tunewatch.plugins.anomaly.rolling import (
    DiffNoise,
    Ewma,
    LossScale,
    RollingWindow,
    last_digit_step,
    log_if_positive,
    mean_std,
)


def roundtrip(state: object) -> object:
    return json.loads(json.dumps(state))


def test_a_rolling_window_keeps_only_the_newest_values() -> None:
    window = RollingWindow(3)
    for value in (5.0, 1.0, 2.0, 9.0):
        window.push(value)
    assert window.values() == [1.0, 2.0, 9.0]
    assert len(window) == 3
    assert (window.min(), window.max()) == (1.0, 9.0)


def test_window_statistics_match_the_textbook_definitions() -> None:
    rng = random.Random(3)
    values = [rng.gauss(10.0, 2.0) for _ in range(51)]
    window = RollingWindow(100)
    for value in values:
        window.push(value)
    assert window.median() == statistics.median(values)
    centre = statistics.median(values)
    assert window.mad() == statistics.median(abs(v - centre) for v in values)
    assert window.mean() == pytest.approx(statistics.fmean(values))
    assert window.std() == pytest.approx(statistics.stdev(values))


def test_one_outlier_moves_the_median_and_mad_but_not_much() -> None:
    window = RollingWindow(50)
    for i in range(49):
        window.push(1.0 + 0.01 * (i % 7))
    before = (window.median(), window.mad())
    window.push(1000.0)
    assert window.median() == pytest.approx(before[0], abs=0.01)
    assert window.mad() == pytest.approx(before[1], abs=0.01)


def test_a_window_restored_under_a_smaller_size_keeps_its_newest_values() -> None:
    window = RollingWindow(5)
    for value in range(5):
        window.push(float(value))
    smaller = RollingWindow(2)
    smaller.restore(roundtrip(window.state()))  # type: ignore[arg-type]
    assert smaller.values() == [3.0, 4.0]


def test_the_ewma_starts_as_the_plain_mean_instead_of_the_first_value() -> None:
    ewma = Ewma(0.05)
    assert ewma.mean is None
    ewma.push(10.0)
    ewma.push(0.0)
    # Debiased: 10 and 0 weigh almost equally; a plain recurrence would still say 9.5.
    assert ewma.mean == pytest.approx(5.0, abs=0.2)


def test_the_ewma_forgets_old_values() -> None:
    ewma = Ewma(0.3)
    for _ in range(100):
        ewma.push(1.0)
    for _ in range(30):
        ewma.push(2.0)
    assert ewma.mean == pytest.approx(2.0, abs=1e-4)


def test_ewma_state_survives_json_exactly() -> None:
    ewma, copy = Ewma(0.1), Ewma(0.1)
    for value in (1.0, 0.3, 7.25, 2.0):
        ewma.push(value)
    copy.restore(roundtrip(ewma.state()))  # type: ignore[arg-type]
    assert copy.push(3.0) == ewma.push(3.0)


@pytest.mark.parametrize("sigma", [0.02, 0.1, 0.3])
def test_diff_noise_measures_the_noise_of_a_trending_series(sigma: float) -> None:
    rng = random.Random(11)
    noise = DiffNoise()
    for step in range(400):
        # A steep decay: the spread of the values themselves would be mostly trend.
        noise.push(-0.01 * step + rng.gauss(0.0, sigma))
    assert noise.std() == pytest.approx(sigma, rel=0.2)


def test_diff_noise_ignores_a_spike_on_a_steep_ramp() -> None:
    rng = random.Random(5)
    noise = DiffNoise()
    values = [0.5 * i + rng.gauss(0.0, 0.1) for i in range(200)]
    values[100] += 50.0
    for value in values:
        noise.push(value)
    assert noise.std() == pytest.approx(0.1, rel=0.25)


def test_diff_noise_state_survives_json() -> None:
    noise, copy = DiffNoise(), DiffNoise()
    for value in (1.0, 1.5, 0.5, 2.0, 1.25):
        noise.push(value)
    copy.restore(roundtrip(noise.state()))  # type: ignore[arg-type]
    noise.push(3.0)
    copy.push(3.0)
    assert copy.std() == noise.std()


def test_logs_only_of_positive_values() -> None:
    assert log_if_positive([1.0, math.e]) == [0.0, 1.0]
    assert log_if_positive([1.0, 0.0]) is None
    assert log_if_positive([]) is None


def test_mean_std_overflows_to_inf_instead_of_raising() -> None:
    mean, std = mean_std([1e308, 1e308, -1e308])
    assert not math.isfinite(std) or not math.isfinite(mean)
    assert mean_std([2.0]) == (2.0, 0.0)


@pytest.mark.parametrize(
    ("value", "step"),
    [(0.0113, 1e-4), (2.5, 0.1), (3.0, 0.1), (-0.0001, 1e-4), (2.5e-05, 1e-6), (1e20, 0.1)],
)
def test_the_last_digit_step_is_that_of_the_value_as_written(value: float, step: float) -> None:
    assert last_digit_step(value) == pytest.approx(step)


def scale_of(values: list[float]) -> LossScale:
    scale = LossScale()
    for value in values:
        scale.push(value)
    return scale


def test_a_loss_is_on_a_log_scale_while_it_is_positive_and_above_its_rounding_floor() -> None:
    assert not scale_of([0.8917, 0.8196, 0.5, 0.6476, 0.0013]).additive
    # A full-precision loss has no rounding floor to speak of.
    assert not scale_of([0.6931471805599453, 0.000123456789]).additive


def test_a_loss_that_crosses_zero_is_on_an_additive_scale_for_good() -> None:
    scale = scale_of([0.0002, -0.0001])
    assert scale.additive
    assert not scale.push(0.5)
    assert scale.additive


def test_a_loss_at_its_rounding_floor_is_on_an_additive_scale_once_the_floor_is_known() -> None:
    # Five values teach the floor: a first 0.5 may be 0.5000 written short.
    assert not scale_of([0.5]).additive
    scale = scale_of([0.8917, 0.8196, 0.6476, 0.4701, 0.0004])
    assert scale.additive
    assert scale.floor == pytest.approx(0.0005)


def test_a_loss_scale_survives_json() -> None:
    scale = scale_of([0.8917, 0.8196])
    copy = LossScale()
    copy.restore(roundtrip(scale.state()))  # type: ignore[arg-type]
    for value in (0.6476, 0.4701, 0.0004):
        assert copy.push(value) == scale.push(value)
    assert copy.state() == scale.state()
