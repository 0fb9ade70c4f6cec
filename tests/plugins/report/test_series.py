"""Curves for the chart: thinned to a few thousand points without losing a spike."""

from __future__ import annotations

import math

from tunewatch.plugins.report.series import MAX_SERIES_POINTS, Column, steps_per_hour, thin


def column(values: list[float]) -> Column:
    c = Column()
    c.add(range(len(values)), [float(i) for i in range(len(values))], values)
    return c


def test_a_long_curve_is_thinned_and_keeps_its_spike_and_order() -> None:
    values = [1.0 + 0.001 * (i % 7) for i in range(100_000)]
    values[61_234] = 50.0
    values[70_000] = math.nan
    thinned = thin(column(values))
    assert len(thinned.steps) <= MAX_SERIES_POINTS
    assert 61_234 in thinned.steps and max(thinned.values) == 50.0
    assert all(math.isfinite(v) for v in thinned.values)
    assert list(thinned.steps) == sorted(thinned.steps)
    assert thinned.steps[0] == 0


def test_a_short_curve_is_kept_whole_but_its_nan() -> None:
    thinned = thin(column([3.0, math.inf, 2.0]))
    assert thinned.steps == (0, 2) and thinned.values == (3.0, 2.0)


def test_steps_per_hour_needs_two_points_that_moved() -> None:
    assert steps_per_hour(column([1.0])) is None
    c = Column()
    c.add([100, 400], [0.0, 1800.0], [1.0, 0.9])
    assert steps_per_hour(c) == 600.0
