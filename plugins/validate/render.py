"""Show a ValidationReport: a terminal report for a person, Markdown, or JSON for programs."""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from typing import Any

import orjson

from tunewatch.daemon.text import printable
from tunewatch.plugins.validate.report import Problem, TokenStats, ValidationReport

SHOWN_PER_CATEGORY = 3
GROUPS_SHOWN = 5
_VERDICT_TEXT = {
    "ready": "ready to train",
    "review": "review the warnings before training",
    "fix": "fix before training",
}
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~])")


def to_json(report: ValidationReport) -> dict[str, Any]:
    data = dataclasses.asdict(report)
    data["verdict"] = report.verdict
    return data


def dumps_json(reports: list[ValidationReport]) -> str:
    return orjson.dumps([to_json(r) for r in reports], option=orjson.OPT_INDENT_2).decode() + "\n"


def _by_category(problems: tuple[Problem, ...]) -> dict[str, list[Problem]]:
    grouped: defaultdict[str, list[Problem]] = defaultdict(list)
    for problem in problems:
        grouped[problem.category].append(problem)
    return dict(sorted(grouped.items()))


def _tokens_line(label: str, stats: TokenStats | None) -> str:
    if stats is None:
        return f"  {label}: none"
    return (
        f"  {label}: min {stats.min}, mean {stats.mean:.1f}, p50 {stats.p50}, "
        f"p95 {stats.p95}, max {stats.max}"
    )


def _groups(groups: tuple[tuple[int, ...], ...], verbose: bool) -> list[str]:
    shown = groups if verbose else groups[:GROUPS_SHOWN]
    lines = ["    lines " + ", ".join(map(str, group)) for group in shown]
    if len(shown) < len(groups):
        lines.append(f"    ... and {len(groups) - len(shown)} more groups (--verbose)")
    return lines


def render_text(report: ValidationReport, *, verbose: bool = False) -> str:
    """The report a person reads in a terminal; text from the data or a file name is escaped."""
    out = [
        f"{report.path}",
        f"  format: {report.format}   examples: {report.examples}",
        f"  errors: {report.errors}   warnings: {report.warnings}",
        f"  exact duplicates: {len(report.duplicate_groups)} groups, "
        f"near-duplicates: {len(report.near_duplicate_groups)} groups",
    ]
    out += _groups(report.duplicate_groups, verbose)
    if report.near_duplicate_groups:
        out.append("  near-duplicate groups:")
        out += _groups(report.near_duplicate_groups, verbose)
    out.append(f"  tokens ({report.tokenizer}):")
    out.append(_tokens_line("prompt", report.prompt_tokens))
    out.append(_tokens_line("answer", report.answer_tokens))
    if report.over_max_seq_len:
        out.append(f"  over max_seq_len: {report.over_max_seq_len} rows")
    for category, problems in _by_category(report.problems).items():
        out.append(f"  {category} ({problems[0].level}):")
        shown = problems if verbose else problems[:SHOWN_PER_CATEGORY]
        out += [f"    line {p.line}: {p.message}" for p in shown]
        if len(shown) < len(problems):
            out.append(f"    ... {len(problems) - len(shown)} more shown with --verbose")
    out.append(f"  score: {report.score}/100 -> {_VERDICT_TEXT[report.verdict]}")
    out += [f"    -{d.points:g}  {d.reason}" for d in report.deductions]
    # The path and the messages quoting the data may hold escape sequences: show, never obey.
    return "\n".join(map(printable, out)) + "\n"


def escape_markdown(text: str) -> str:
    """Text from the data or a file name, made inert: no markup, no HTML, no table breaks.

    Control characters, line breaks included, become visible escapes: it stays on its line.
    """
    return _MARKDOWN_SPECIAL.sub(r"\\\1", printable(text))


def render_markdown(report: ValidationReport, *, verbose: bool = False) -> str:
    esc = escape_markdown
    out = [
        f"## Validation of {esc(report.path)}",
        "",
        f"- format: {report.format}, examples: {report.examples}",
        f"- errors: {report.errors}, warnings: {report.warnings}",
        f"- exact duplicate groups: {len(report.duplicate_groups)}, "
        f"near-duplicate groups: {len(report.near_duplicate_groups)}",
        f"- tokenizer: {esc(report.tokenizer)}",
        f"- score: **{report.score}/100**, {_VERDICT_TEXT[report.verdict]}",
        "",
    ]
    problems = _by_category(report.problems)
    if problems:
        out += ["| category | level | line | message |", "|---|---|---|---|"]
        for category, items in problems.items():
            for p in items if verbose else items[:SHOWN_PER_CATEGORY]:
                out.append(f"| {category} | {p.level} | {p.line} | {esc(p.message)} |")
        out.append("")
    out += [f"- -{d.points:g}: {esc(d.reason)}" for d in report.deductions]
    return "\n".join(out) + "\n"
