"""The report as Markdown, and its one-line health summary.

Run names, paths, log messages and summaries come from files a trainer or a user wrote: each
goes through `escape_markdown` (or a code fence sized to it), so none can add a table cell, a
link, an image or HTML to the report.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from urllib.parse import quote

from tunewatch.daemon.history import fmt_duration, fmt_step, fmt_value
from tunewatch.daemon.run_status import fmt_percent
from tunewatch.daemon.text import printable
from tunewatch.plugins.report.model import Report, RunSummary

CHART_ALT = "Loss and eval loss"

# What CommonMark/GFM reads inside a line: escapes, code, emphasis, strikethrough, links and
# images, table cells, math, headings' #s. Each becomes a backslash escape (any ASCII
# punctuation may be escaped), and &, <, > become entities, so no HTML or entity survives.
_INLINE_SPECIAL = re.compile(r"[\\`*_\[\]|~$#!]")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# What opens a block when it starts a line or a list item: a list marker, a heading, a quote.
_BLOCK_START = re.compile(r"^(\s*)([-+=]|\d+[.)])")


def escape_markdown(text: str) -> str:
    """`text` shown literally within one line of Markdown (a cell, a heading, a list item).

    Control characters, line breaks included, become visible escapes (`\\n`), so the text stays
    on its line and in its cell.
    """
    safe = printable(text)
    safe = re.sub("[&<>]", lambda m: _ENTITIES[m.group()], safe)
    safe = _INLINE_SPECIAL.sub(lambda m: "\\" + m.group(), safe)
    return _BLOCK_START.sub(lambda m: m.group(1) + _escape_marker(m.group(2)), safe)


def _escape_marker(marker: str) -> str:
    return marker[:-1] + "\\" + marker[-1]


def code_block(text: str) -> list[str]:
    """`text` (one line, e.g. a command) as a fenced block longer than any backtick run in it."""
    line = printable(text)
    runs = [len(r) for r in re.findall("`+", line)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return [fence, line, fence]


def health_line(report: Report) -> str:
    """One line: how many runs do what, the alerts, the fullest disk. Plain text (escape it)."""
    parts = [_runs_phrase(report.runs)]
    alerts = len(report.anomalies.alerts)
    if alerts:
        parts.append(f"{alerts} alert{'s' if alerts != 1 else ''}")
    if report.resources.volumes:
        fullest = max(report.resources.volumes, key=lambda v: v.used_fraction)
        parts.append(f"disk {fullest.used_fraction * 100:.0f} % on {fullest.mount}")
    return printable("; ".join(parts))


def _runs_phrase(runs: Sequence[RunSummary]) -> str:
    if not runs:
        return "no run active in the period"
    diverged = [r for r in runs if r.diverged_at_step is not None]
    counts: dict[str, list[RunSummary]] = {}
    for r in runs:
        if r.diverged_at_step is None:
            counts.setdefault(r.condition, []).append(r)
    phrases = []
    for condition in ("training", "stalled", "inactive", "finished", "unknown"):
        members = counts.get(condition, [])
        if not members:
            continue
        phrase = f"{len(members)} {condition}"
        if condition == "training" and len(members) == 1 and members[0].progress is not None:
            phrase += f" ({members[0].progress * 100:.0f} %)"
        phrases.append(phrase)
    if len(diverged) == 1:
        phrases.append(f"1 diverged at step {fmt_step(diverged[0].diverged_at_step or 0)}")
    elif diverged:
        phrases.append(f"{len(diverged)} diverged")
    return f"{len(runs)} run{'s' if len(runs) != 1 else ''}: " + ", ".join(phrases)


def render_markdown(report: Report, chart_file: str | None) -> str:
    """The whole report; `chart_file` is the chart's file name relative to the report (None:
    no chart, said in its place)."""
    esc = escape_markdown
    out = [
        f"# Training report, {_when(report.until)}",
        "",
        f"Period: {_when(report.since)} to {_when(report.until)} "
        f"({fmt_duration(report.until - report.since)}).",
        "",
        f"**Health:** {esc(health_line(report))}",
        "",
    ]
    if chart_file is not None:
        out += [f"![{CHART_ALT}]({quote(chart_file)})", ""]
    elif report.chart.runs:
        out += ["*(The chart could not be drawn; see the daemon's log.)*", ""]
    out += _recommendations(report)
    out += _status(report)
    out += _activity(report)
    out += _anomalies(report)
    out += _resources(report)
    return "\n".join(out).rstrip("\n") + "\n"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A GFM table; cells must be escaped already (numbers need not be)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _section(title: str, body: list[str], empty: str) -> list[str]:
    return [f"## {title}", "", *(body or [empty, ""])]


def _recommendations(report: Report) -> list[str]:
    body: list[str] = []
    for i, r in enumerate(report.recommendations, 1):
        body.append(f"{i}. **{escape_markdown(r.title)}**: {escape_markdown(r.detail)}")
        if r.command is not None:
            body += ["", *("   " + line for line in code_block(r.command))]
        body.append("")
    return _section("Recommendations", body, "Nothing to do.")


def _opt(value: float | None, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _status(report: Report) -> list[str]:
    esc = escape_markdown
    rows = [
        (
            esc(r.name),
            esc(
                r.state
                if r.diverged_at_step is None
                else f"{r.state}, diverged at step {fmt_step(r.diverged_at_step)}"
            ),
            esc(r.progress_text),
            _metric(r.loss),
            _metric(r.eval_loss),
            "-" if r.accuracy is None else fmt_percent(r.accuracy),
            _opt(r.steps_per_hour, "{:,.0f}"),
            "-" if r.eta_s is None else fmt_duration(r.eta_s),
        )
        for r in report.runs
    ]
    header = ("run", "state", "progress", "loss", "eval loss", "accuracy", "steps/h", "ETA")
    body = _table(header, rows) if rows else []
    if report.quiet_runs:
        body += [f"{report.quiet_runs} other run(s) finished or silent, nothing new.", ""]
    return _section("Training status", body, "No run logged anything in the period.")


def _metric(value: float | None) -> str:
    return "-" if value is None else fmt_value(value)  # digits, '.', 'e', NaN, Inf: inert


def _activity(report: Report) -> list[str]:
    esc, a = escape_markdown, report.activity
    body: list[str] = []
    if a.validations:
        body += ["### Data validated", ""]
        body += _table(
            ("file", "score", "verdict", "report"),
            (
                (
                    esc(v.path),
                    f"{v.score}/100 ({'pass' if v.passed else 'fail'})",
                    esc(v.verdict),
                    esc(v.report_path or "-"),
                )
                for v in a.validations
            ),
        )
    if a.source_errors:
        body += ["### Source errors", ""]
        body += _table(
            ("run", "errors", "last"),
            ((esc(e.run), str(e.count), esc(e.last_message)) for e in a.source_errors),
        )
    saved = [("checkpoint", s) for s in a.checkpoints] + [("snapshot", s) for s in a.snapshots]
    if saved:
        body += ["### Checkpoints and snapshots", ""]
        body += _table(
            ("run", "what", "step", "path"),
            ((esc(s.run), what, fmt_step(s.step), esc(s.path)) for what, s in saved),
        )
    if a.comparisons:
        body += ["### Comparisons", ""]
        body += _table(
            ("run", "models", "verdict", "report"),
            (
                (
                    esc(c.run or "-"),
                    f"{esc(c.model_a)} vs {esc(c.model_b)}",
                    ("failed: " if c.failed else "") + esc(c.summary),
                    esc(c.report_path or "-"),
                )
                for c in a.comparisons
            ),
        )
    return _section("Activity", body, "Nothing validated, saved or compared.")


def _anomalies(report: Report) -> list[str]:
    esc, a = escape_markdown, report.anomalies
    body: list[str] = []
    if a.alerts:
        body += ["### Alerts", ""]
        body += _table(
            ("run", "kind", "severity", "step", "value", "detail"),
            (
                (
                    esc(x.run),
                    esc(x.kind),
                    x.severity,
                    fmt_step(x.step),
                    f"{esc(x.metric)} {fmt_value(x.value)}",
                    esc(x.detail),
                )
                for x in a.alerts
            ),
        )
    if a.quiet:
        body += ["### Recorded, not pushed", ""]
        body += [
            f"- {q.count} {esc(q.kind)} on {esc(q.metric)} ({esc(q.run)}), not pushed"
            for q in a.quiet
        ]
        body.append("")
    if a.best_models:
        body += ["### Best models", ""]
        body += _table(
            ("run", "step", "metric", "snapshot"),
            (
                (
                    esc(b.run),
                    fmt_step(b.step),
                    f"{esc(b.metric)} {fmt_value(b.value)}",
                    esc(b.snapshot or "none"),
                )
                for b in a.best_models
            ),
        )
    if a.resources:
        body += ["### Resources", ""]
        body += [
            f"- {'recovered: ' if r.recovered else esc(r.severity) + ': '}{esc(r.summary)}"
            + (f". {esc(r.advice)}" if r.advice else "")
            for r in a.resources
        ]
        body.append("")
    return _section("Anomalies", body, "No anomaly.")


def _resources(report: Report) -> list[str]:
    esc, res = escape_markdown, report.resources
    body: list[str] = []
    if res.volumes:
        body += _table(
            ("volume", "used", "free", "total", "runs"),
            (
                (
                    esc(v.mount),
                    f"{v.used_fraction * 100:.0f} %",
                    _gib(v.free_bytes),
                    _gib(v.total_bytes),
                    esc(", ".join(v.runs)),
                )
                for v in res.volumes
            ),
        )
    if res.storage:
        body += _table(
            ("run", "checkpoints", "their size", "snapshots"),
            (
                (
                    esc(s.run),
                    str(len(s.checkpoints)),
                    _gib(sum(c.bytes for c in s.checkpoints)) + ("" if s.complete else "+"),
                    "-"
                    if s.snapshots_dir is None
                    else f"{_gib(s.snapshots_bytes)} in {esc(s.snapshots_dir)}",
                )
                for s in res.storage
            ),
        )
    machine = []
    if res.memory is not None:
        machine.append(
            f"- RAM: {res.memory.used_fraction * 100:.0f} % used, "
            f"{_gib(res.memory.available_bytes)} available of {_gib(res.memory.total_bytes)}"
        )
    machine += [
        f"- GPU {g.index} ({esc(g.name)}): {_gib(g.memory_used_bytes)} of "
        f"{_gib(g.memory_total_bytes)} used"
        + ("" if g.utilisation_percent is None else f", {g.utilisation_percent} % busy")
        for g in res.gpus
    ]
    if res.gpu_note:
        machine.append(f"- {esc(res.gpu_note)}")
    body += [*machine, ""]
    return _section("Resources", body, "")


def _gib(n: int) -> str:
    """A size as `du -h` says it, in binary units."""
    size, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
