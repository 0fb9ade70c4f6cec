"""generate_report: the dated report, its chart and latest_report.md, whose link resolves."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

from markdown_it import MarkdownIt

from tunewatch.plugins.report.generate import generate_report, report_json

from .stores import SINCE, UNTIL, StoreBuilder, anomaly
from .test_chart_process import PNG_SIGNATURE


def test_the_report_its_chart_and_the_latest_copy_are_written(tmp_path: Path) -> None:
    builder = StoreBuilder(tmp_path)
    builder.points(
        "run-a",
        [1, 2, 3],
        [UNTIL - 90, UNTIL - 60, UNTIL - 30],
        {"loss": [2.0, 1.5, math.nan], "eval_loss": [2.1, 1.6, 1.4]},
    )
    builder.record(anomaly("run-a", 3, "non_finite", value=math.nan))
    db = builder.close()
    out = tmp_path / "reports"
    stamp = dt.datetime(2026, 3, 2, 8, 0)
    written = generate_report(db, out, since=SINCE, until=UNTIL, stamp=stamp)

    assert written.markdown == out / "daily_report_20260302_0800.md"
    assert written.chart == out / "daily_report_20260302_0800.png"
    assert written.latest == out / "latest_report.md"
    assert written.latest.read_text() == written.markdown.read_text()
    for report in (written.markdown, written.latest):
        tokens = MarkdownIt("commonmark").enable("table").parse(report.read_text())
        images = [c for t in tokens for c in t.children or [] if c.type == "image"]
        (image,) = images
        linked = report.parent / str(image.attrGet("src"))
        assert linked.read_bytes()[:8] == PNG_SIGNATURE
    assert written.health.startswith("1 run: 1 diverged at step 3; 1 alert; disk ")
    assert sorted(p.name for p in out.iterdir()) == [
        "daily_report_20260302_0800.md",
        "daily_report_20260302_0800.png",
        "latest_report.md",
    ]  # no temporary file left behind
    data = report_json(written.report)
    json.dumps(data, allow_nan=False)  # NaN and Inf became null
    assert data["health"] == written.health
    assert data["runs"][0]["loss"] is None and data["anomalies"]["alerts"][0]["value"] is None


def test_without_points_there_is_no_chart_and_the_report_says_so(tmp_path: Path) -> None:
    builder = StoreBuilder(tmp_path)
    builder.run("empty")
    written = generate_report(
        builder.close(),
        tmp_path / "out",
        since=SINCE,
        until=UNTIL,
        stamp=dt.datetime(2026, 3, 2, 8, 0),
    )
    assert written.chart is None
    assert "![" not in written.markdown.read_text()
