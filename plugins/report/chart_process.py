"""Draw the report's chart in a child process (`plugins/report/chart.py`): the daemon never
imports matplotlib, and a chart that fails costs the image, never the report."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import orjson
import structlog

from tunewatch.plugins.report.model import ChartData

log = structlog.get_logger(__name__)
CHART_MODULE = "tunewatch.plugins.report.chart"


class ChartDrawer:
    """The chart's child process, started early: while the report is collected from the
    store, the child imports matplotlib (half a second); then `draw` hands it the data."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._child: subprocess.Popen[bytes] | None = None
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-m", CHART_MODULE, "--data", "-", "--out", str(out)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={**os.environ, "MPLBACKEND": "Agg"},
            )
        except OSError as exc:
            log.warning("cannot start the report's chart", error=repr(exc), out=str(out))

    def draw(self, series: ChartData, timeout_s: float = 60) -> bool:
        """Write the PNG of `series`; False (and a logged reason) if it could not be drawn in
        `timeout_s`. Never raises."""
        child = self._child
        if child is None:
            return False
        try:
            _, stderr = child.communicate(orjson.dumps(dataclasses.asdict(series)), timeout_s)
        except subprocess.TimeoutExpired:
            self.cancel()
            log.warning(
                "the report's chart took too long; the report goes without it",
                timeout_s=timeout_s,
                out=str(self.out),
            )
            return False
        except (OSError, TypeError, ValueError) as exc:
            self.cancel()
            log.warning("cannot draw the report's chart", error=repr(exc), out=str(self.out))
            return False
        if child.returncode != 0 or not self.out.is_file():
            reason = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["-"]
            log.warning(
                "the report's chart failed; the report goes without it",
                exit_code=child.returncode,
                reason=reason[0],
                out=str(self.out),
            )
            return False
        return True

    def cancel(self) -> None:
        """No chart after all (nothing to draw, or it failed): the child goes."""
        if self._child is not None and self._child.poll() is None:
            self._child.kill()
            self._child.communicate()


def render_chart(series: ChartData, out: Path, timeout_s: float = 60) -> bool:
    """Write the PNG of `series` to `out`; False (and a logged reason) if it could not be
    drawn in `timeout_s`. Never raises."""
    return ChartDrawer(out).draw(series, timeout_s)
