"""The forecast maths: least-squares slopes of recent samples, and when a limit is reached."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from tunewatch.plugins.resources.forecast import Series, seconds_until, slope_per_s

values = st.floats(allow_nan=True, allow_infinity=True)
finite = st.floats(min_value=-1e15, max_value=1e15)
series_points = st.lists(st.tuples(values, values), max_size=40)


def test_a_steady_fall_is_its_exact_rate() -> None:
    points = [(1_700_000_000.0 + 60 * i, 5e9 - 1e6 * 60 * i) for i in range(12)]
    slope = slope_per_s(points)
    assert slope is not None and math.isclose(slope, -1e6, rel_tol=1e-9)


def test_too_few_points_or_one_instant_tell_no_slope() -> None:
    assert slope_per_s([(0.0, 1.0), (1.0, 2.0)]) is None
    assert slope_per_s([(5.0, 1.0), (5.0, 2.0), (5.0, 3.0)]) is None


def test_the_series_keeps_only_its_window_and_starts_again_when_the_clock_goes_back() -> None:
    series = Series(window_s=100.0)
    for t in range(0, 300, 10):
        series.add(float(t), float(t))
    assert series.points[0][0] == 190.0
    series.add(50.0, 1.0)
    assert list(series.points) == [(50.0, 1.0)]


@given(series_points, st.floats(min_value=1.0, max_value=1e6))
def test_any_series_never_crashes_and_gives_a_finite_slope_or_none(
    points: list[tuple[float, float]], window_s: float
) -> None:
    series = Series(window_s)
    for t, v in points:
        series.add(t, v)
    slope = series.slope_per_s()
    assert slope is None or math.isfinite(slope)
    assert all(math.isfinite(t) and math.isfinite(v) for t, v in series.points)


@given(values, values, st.one_of(st.none(), values))
def test_an_eta_is_never_negative(current: float, limit: float, rate: float | None) -> None:
    eta = seconds_until(current, limit, rate)
    assert eta is None or (eta >= 0 and math.isfinite(eta))


@given(
    finite,
    st.floats(min_value=1.0, max_value=1e12),
    st.floats(min_value=1.0, max_value=1e12),
    st.floats(min_value=1e-3, max_value=1e9),
)
def test_more_room_is_never_sooner_and_a_faster_climb_never_later(
    current: float, room: float, more: float, rate: float
) -> None:
    limit = current + room
    eta = seconds_until(current, limit, rate)
    assert eta is not None
    later = seconds_until(current, limit + more, rate)
    assert later is not None and later >= eta
    faster = seconds_until(current, limit, rate * 2)
    assert faster is not None and faster <= eta


@given(
    st.floats(min_value=1e3, max_value=1e12),
    st.floats(min_value=1.0, max_value=1e7),
    st.integers(min_value=3, max_value=30),
)
def test_a_disk_filling_linearly_is_forecast_to_fill_when_it_does(
    free: float, rate: float, count: int
) -> None:
    points = [
        (1_700_000_000.0 + 300 * i, free + rate * 300 * (count - 1 - i)) for i in range(count)
    ]
    slope = slope_per_s(points)
    assert slope is not None
    eta = seconds_until(0.0, free, -slope)
    assert eta is not None and math.isclose(eta, free / rate, rel_tol=1e-6)


def test_nothing_climbing_never_arrives_and_being_there_is_now() -> None:
    assert seconds_until(1.0, 10.0, 0.0) is None
    assert seconds_until(1.0, 10.0, -5.0) is None
    assert seconds_until(1.0, 10.0, None) is None
    assert seconds_until(10.0, 10.0, None) == 0.0
