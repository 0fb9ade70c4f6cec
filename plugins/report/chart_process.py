"""Draw the report's chart in a child process (`plugins/report/chart.py`): the daemon never
imports matplotlib, and a chart that fails costs the image, never the report."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import structlog

from tunewatch.plugins.report.model import ChartData

log = structlog.get_logger(__name__)
CHART_MODULE = "tunewatch.plugins.report.chart"


def render_chart(series: ChartData, out: Path, timeout_s: float = 60) -> bool:
    """Write the PNG of `series` to `out`; False (and a logged reason) if it could not be
    drawn in `timeout_s`. Never raises."""
    try:
        with tempfile.TemporaryDirectory(prefix="tunewatch-chart-") as scratch:
            data = Path(scratch) / "series.json"
            data.write_bytes(orjson.dumps(dataclasses.asdict(series)))
            child = subprocess.run(
                [sys.executable, "-m", CHART_MODULE, "--data", str(data), "--out", str(out)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout_s,
                env={**os.environ, "MPLBACKEND": "Agg"},
                check=False,
            )
    except subprocess.TimeoutExpired:
        log.warning(
            "the report's chart took too long; the report goes without it",
            timeout_s=timeout_s,
            out=str(out),
        )
        return False
    except (OSError, TypeError, ValueError) as exc:
        log.warning("cannot draw the report's chart", error=repr(exc), out=str(out))
        return False
    if child.returncode != 0 or not out.is_file():
        reason = child.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["-"]
        log.warning(
            "the report's chart failed; the report goes without it",
            exit_code=child.returncode,
            reason=reason[0],
            out=str(out),
        )
        return False
    return True
