"""The report's chart, drawn by matplotlib in a child process:
`python -m tunewatch.plugins.report.chart --data series.json --out chart.png`.

The daemon never imports matplotlib (tens of MB that would stay in its memory for good):
`chart_process.render_chart` writes the data and runs this module.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: a headless box has none, and the file is all we want

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from tunewatch.daemon.atomic import write_atomic

ALERT_COLOURS = {"critical": "tab:red", "normal": "tab:orange"}
# A y range wider than this ratio (a loss that blew up) is drawn on a log scale.
LOG_SCALE_RATIO = 10.0


def draw(data: dict[str, Any]) -> bytes:
    """The PNG of the chart for `data` (a `ChartData` as JSON)."""
    fig, (period, whole) = plt.subplots(2, 1, figsize=(10, 7), height_ratios=(3, 1.3))
    # Fixed margins: constrained_layout draws every line twice to measure the labels, which
    # doubled the time over ten runs of 2,000 points.
    fig.subplots_adjust(left=0.07, right=0.98, top=0.95, bottom=0.05, hspace=0.28)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    period_values: list[float] = []
    whole_values: list[float] = []
    for i, run in enumerate(data["runs"]):
        period_values += run["loss"]["values"] + run["eval_loss"]["values"]
        whole_values += run["whole_loss"]["values"] + run["whole_eval_loss"]["values"]
        colour = colours[i % len(colours)]
        _curve(period, run["loss"], colour, "-", f"{run['run']} loss")
        _curve(period, run["eval_loss"], colour, "--", f"{run['run']} eval loss")
        _curve(whole, run["whole_loss"], colour, "-", None, alpha=0.45)
        _curve(whole, run["whole_eval_loss"], colour, "--", None, alpha=0.45)
        for mark in run["alerts"]:
            period.axvline(
                mark["step"],
                color=ALERT_COLOURS.get(mark["severity"], "tab:gray"),
                linestyle=":",
                linewidth=1.2,
            )
            whole.axvline(mark["step"], color="tab:red", alpha=0.3, linewidth=0.8)
    period.set_title("Loss and eval loss in the period (dotted lines: alerts)")
    period.set_xlabel("step")
    whole.set_title("Whole run", fontsize=9, color="dimgray")
    whole.tick_params(labelsize=8, colors="dimgray")
    for axes, values in ((period, period_values), (whole, whole_values)):
        _scale(axes, values)
        axes.grid(alpha=0.3)
    if period.get_legend_handles_labels()[0]:
        # A fixed corner: "best" scores every point of every curve against every position.
        period.legend(fontsize=8, loc="upper right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _curve(
    axes: Axes,
    series: dict[str, list[float]],
    colour: str,
    style: str,
    label: str | None,
    alpha: float = 1.0,
) -> None:
    if not series["steps"]:
        return
    axes.plot(
        series["steps"],
        series["values"],
        color=colour,
        linestyle=style,
        linewidth=1.0,
        alpha=alpha,
        label=label,
    )


def _scale(axes: Axes, values: list[float]) -> None:
    positive = [v for v in values if v > 0]
    if (
        len(positive) == len(values)
        and positive
        and max(positive) / min(positive) > LOG_SCALE_RATIO
    ):
        axes.set_yscale("log")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunewatch.plugins.report.chart")
    parser.add_argument("--data", required=True, help="the chart data (JSON); -: standard input")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args(argv)
    try:
        raw = sys.stdin.buffer.read() if args.data == "-" else Path(args.data).read_bytes()
        data = json.loads(raw)
        png = draw(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(
            f"cannot draw the chart from {args.data}: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 1
    write_atomic(args.out, png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
