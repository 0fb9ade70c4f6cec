"""The chart child: a PNG from the series, and a failure that costs the image, not the report."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tunewatch.plugins.report.chart_process import render_chart
from tunewatch.plugins.report.model import AlertMark, ChartData, RunSeries, Series

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def series(n: int, blow_up_at: int | None = None) -> Series:
    steps = tuple(range(n))
    values = tuple(
        100.0 if blow_up_at is not None and s >= blow_up_at else 3.0 * math.exp(-s / n)
        for s in steps
    )
    return Series(steps, tuple(float(s) for s in steps), values)


def chart(loss: Series) -> ChartData:
    run = RunSeries(
        run="run | `a`",
        loss=loss,
        eval_loss=series(5),
        whole_loss=loss,
        whole_eval_loss=series(5),
        alerts=(AlertMark(step=35, time=35.0, kind="divergence", severity="critical"),),
    )
    return ChartData(since=0.0, until=100.0, runs=(run,))


def test_the_chart_is_a_png(tmp_path: Path) -> None:
    out = tmp_path / "chart.png"
    assert render_chart(chart(series(60, blow_up_at=35)), out) is True
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert out.stat().st_size > 10_000


def test_a_failing_child_returns_false_and_writes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Series(steps=(1, 2, 3), times=(1.0,), values=(1.0, 2.0))  # lengths disagree
    out = tmp_path / "chart.png"
    assert render_chart(chart(broken), out) is False
    assert not out.exists()


def test_a_child_past_its_timeout_returns_false(tmp_path: Path) -> None:
    out = tmp_path / "chart.png"
    assert render_chart(chart(series(10)), out, timeout_s=0.01) is False
    assert not out.exists()


def test_an_unwritable_destination_returns_false(tmp_path: Path) -> None:
    out = tmp_path / "not-a-dir"
    out.write_text("a file where a folder should be")
    assert render_chart(chart(series(10)), out / "chart.png") is False
