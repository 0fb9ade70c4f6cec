"""Write a report: collect it from the state database, draw its chart, write the Markdown.

`out_dir/daily_report_YYYYMMDD_HHMM.md` and `.png`, and `out_dir/latest_report.md` beside them
(the same text, so its image link resolves too); each file is written atomically.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewatch.daemon.atomic import write_atomic
from tunewatch.daemon.store import Store
from tunewatch.plugins.report.chart_process import ChartDrawer
from tunewatch.plugins.report.content import collect_report
from tunewatch.plugins.report.markdown import health_line, render_markdown
from tunewatch.plugins.report.model import Report

LATEST_NAME = "latest_report.md"


@dataclass(frozen=True, slots=True)
class GeneratedReport:
    markdown: Path  # daily_report_YYYYMMDD_HHMM.md
    latest: Path  # latest_report.md, the same text
    chart: Path | None  # None when there was nothing to draw or drawing failed
    health: str
    report: Report


def report_stem(stamp: dt.datetime) -> str:
    return f"daily_report_{stamp:%Y%m%d_%H%M}"


def generate_report(
    state_db: Path, out_dir: Path, *, since: float, until: float, stamp: dt.datetime
) -> GeneratedReport:
    """Collect the period [since, until) from `state_db` (read-only) and write the report into
    `out_dir`, named after `stamp`. Raises StoreError when the database cannot be read."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = report_stem(stamp)
    drawing = out_dir / f"{stem}.png"
    drawer = ChartDrawer(drawing)  # imports matplotlib while the store is read
    store = Store(state_db, readonly=True)
    try:
        report = collect_report(store, since=since, until=until, now=until)
    except BaseException:
        drawer.cancel()
        raise
    finally:
        store.close()
    drawn = bool(report.chart.runs) and drawer.draw(report.chart)
    if not report.chart.runs:
        drawer.cancel()
    chart = drawing if drawn else None
    text = render_markdown(report, None if chart is None else chart.name)
    markdown = out_dir / f"{stem}.md"
    write_atomic(markdown, text)
    latest = out_dir / LATEST_NAME
    write_atomic(latest, text)
    return GeneratedReport(markdown, latest, chart, health_line(report), report)


def report_json(report: Report) -> dict[str, Any]:
    """The report's figures for `--json`: every section, the health line, the chart's series
    left out (a count of their points instead); NaN and Inf become null."""
    data = dataclasses.asdict(report)
    data["health"] = health_line(report)
    data["chart"] = {
        run.run: {"points": len(run.loss.steps) + len(run.eval_loss.steps)}
        for run in report.chart.runs
    }
    finite: dict[str, Any] = _finite(data)
    return finite


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
