"""Show a Comparison: rich tables on a terminal, a Markdown report, JSON, a notification line.

Terminal and Markdown print the same sections, built once as plain strings (`_sections`). Every
string that came from a model, a test file, a path or a label is data: it is shown, never
obeyed, on a terminal (no escape sequences, no rich markup) and in Markdown (no markup, no HTML,
no extra table cells or lines).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tunewatch.daemon.text import printable
from tunewatch.plugins.compare.results import (
    Comparison,
    ExampleResult,
    ItemResult,
    ModelSide,
    Setup,
    Significance,
)
from tunewatch.plugins.compare.significance import p_text

EXAMPLES_SHOWN = 3
# Longer prompts and outputs are cut in the examples table: it is there to be read at a glance.
EXAMPLE_CHARS = 200
NOTIFICATION_CHARS = 200
TRAINER_METRICS_TITLE = "Trainer-logged metrics (not measured here)"
NOT_MEASURED = "-"


@dataclass(frozen=True, slots=True)
class _Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = ()  # lines under the table: the significance line, how it was timed


@dataclass(frozen=True, slots=True)
class _Lines:
    title: str
    lines: tuple[str, ...]


_Section = _Table | _Lines


# -- what is shown -----------------------------------------------------------------------------


def _sections(comparison: Comparison, examples: int) -> list[_Section]:
    a, b = comparison.a, comparison.b
    sections: list[_Section] = [_compared(a, b)]
    if a.speed is not None or b.speed is not None:
        sections.append(_speed_table(a, b))
    sections.append(_quality(comparison))
    sections.append(_size_table(a, b))
    sections.append(_Lines("Setup", (_setup_line(comparison.setup),)))
    if comparison.items and examples > 0:
        sections.append(_examples_table(comparison.items, examples))
    elif comparison.examples and examples > 0:
        sections.append(_unjudged_examples_table(comparison.examples, examples))
    if comparison.recommendation is not None:
        rec = comparison.recommendation
        chosen = {"a": f"use A ({a.label})", "b": f"use B ({b.label})", None: "use neither"}
        sections.append(_Lines("Recommendation", (chosen[rec.choice], *rec.reasons)))
    return sections


def _compared(a: ModelSide, b: ModelSide) -> _Lines:
    lines = []
    for letter, side in (("A", a), ("B", b)):
        step = "" if side.step is None else f", step {side.step}"
        lines.append(f"{letter}: {side.label} ({side.kind}{step}) {side.path}")
        if not side.finite:
            lines.append(f"{letter} holds NaN/Inf in its weights or outputs (diverged)")
    return _Lines("Compared", tuple(lines))


def _header(a: ModelSide, b: ModelSide, last: str) -> tuple[str, ...]:
    return ("", f"A: {a.label}", f"B: {b.label}", last)


def _speed_table(a: ModelSide, b: ModelSide) -> _Table:
    rows = []
    for what in ("prefill", "decode"):
        median_a, spread_a = _timing(a, what)
        median_b, spread_b = _timing(b, what)
        rows.append(
            (f"{what} tok/s (median)", _rate(median_a), _rate(median_b), _ratio(median_a, median_b))
        )
        rows.append((f"{what} spread (min-max)", _spread(spread_a), _spread(spread_b), ""))
    timed = a.speed or b.speed
    notes = (
        ()
        if timed is None
        else (
            f"{timed.repeats} timed runs after {timed.warmup} warm-up; "
            f"{timed.prompt_tokens} prompt tokens per batch, {timed.new_tokens} new tokens per "
            "sequence",
        )
    )
    return _Table("Speed", _header(a, b, "B / A"), tuple(rows), notes)


def _timing(side: ModelSide, what: str) -> tuple[float | None, tuple[float, float] | None]:
    if side.speed is None:
        return None, None
    if what == "prefill":
        return side.speed.prefill_tokens_per_s, side.speed.prefill_spread
    return side.speed.decode_tokens_per_s, side.speed.decode_spread


def _quality(comparison: Comparison) -> _Section:
    a, b, sig = comparison.a, comparison.b, comparison.significance
    measured = sig is not None or a.accuracy is not None or b.accuracy is not None
    if measured:
        return _quality_table(a, b, sig)
    names = sorted(set(a.trainer_metrics) | set(b.trainer_metrics))
    if not names:
        return _Lines(
            "Quality", ("not compared: no test file, and no metrics logged by the trainer",)
        )
    rows = tuple(
        (name, _general(a.trainer_metrics.get(name)), _general(b.trainer_metrics.get(name)))
        for name in names
    )
    return _Table(TRAINER_METRICS_TITLE, _header(a, b, "")[:3], rows)


def _quality_table(a: ModelSide, b: ModelSide, sig: Significance | None) -> _Table:
    rows = (
        (
            "accuracy",
            _percent(a.accuracy),
            _percent(b.accuracy),
            ""
            if sig is None
            else _difference(sig.accuracy_difference, sig.accuracy_ci, sig, 100, " %"),
        ),
        (
            "mean log-likelihood per token",
            _fixed(a.mean_log_likelihood, 3),
            _fixed(b.mean_log_likelihood, 3),
            ""
            if sig is None
            else _difference(sig.log_likelihood_difference, sig.log_likelihood_ci, sig, 1, ""),
        ),
        ("perplexity", _fixed(a.perplexity, 2), _fixed(b.perplexity, 2), ""),
    )
    notes: tuple[str, ...] = ()
    if sig is not None:
        notes = (
            f"B against A: {sig.summary}",
            f"n={sig.n} paired items; only A right: {sig.only_a_right}, only B right: "
            f"{sig.only_b_right}; exact McNemar {p_text(sig.mcnemar_p)}; intervals: paired "
            "bootstrap",
        )
    return _Table("Quality", _header(a, b, "B - A"), rows, notes)


def _difference(
    value: float, ci: tuple[float, float], sig: Significance, scale: float, unit: str
) -> str:
    return (
        f"{_signed(value * scale)}{unit} ({sig.confidence * 100:g} % CI "
        f"{_signed(ci[0] * scale)} to {_signed(ci[1] * scale)})"
    )


def _size_table(a: ModelSide, b: ModelSide) -> _Table:
    rows = [
        _size_row("weights (safetensors)", a.size.weights_bytes, b.size.weights_bytes, _bytes),
        _size_row("whole directory", a.size.dir_bytes, b.size.dir_bytes, _bytes),
        _size_row("parameters", a.size.parameters, b.size.parameters, _count),
    ]
    if a.size.trainable_parameters is not None or b.size.trainable_parameters is not None:
        trainable = (a.size.trainable_parameters, b.size.trainable_parameters)
        rows.append(_size_row("adapter parameters", *trainable, _count))
    return _Table("Size", _header(a, b, "B / A"), tuple(rows))


def _size_row(
    what: str, value_a: int | None, value_b: int | None, show: Callable[[int | None], str]
) -> tuple[str, ...]:
    return (what, show(value_a), show(value_b), _ratio(value_a, value_b))


def _setup_line(setup: Setup) -> str:
    test = (
        "no test file"
        if setup.test_file is None
        else f"test file {setup.test_file} (n={setup.test_items})"
    )
    order = "A and B interleaved" if setup.interleaved else "A then B"
    return (
        f"{setup.device}, {setup.dtype}, batch {setup.batch_size}, max_new_tokens "
        f"{setup.max_new_tokens}, {setup.prompts} prompts x {setup.repeats} repeats "
        f"({setup.warmup} warm-up), {order}, torch {setup.torch_version}, transformers "
        f"{setup.transformers_version}, {test}"
    )


def _examples_table(items: Sequence[ItemResult], shown: int) -> _Table:
    order = sorted(range(len(items)), key=lambda i: (_agreement(items[i]), i))[:shown]
    rows = tuple(
        (
            str(i + 1),
            _clip(items[i].prompt),
            _clip(items[i].reference),
            _marked(items[i].correct_a, items[i].output_a),
            _marked(items[i].correct_b, items[i].output_b),
        )
        for i in order
    )
    title = f"Side-by-side examples ({len(rows)} of {len(items)}, disagreements first)"
    return _Table(title, ("#", "prompt", "reference", "A output", "B output"), rows)


def _unjudged_examples_table(examples: Sequence[ExampleResult], shown: int) -> _Table:
    """Without a test file: the outputs of both, nothing judged, different outputs first."""
    order = sorted(range(len(examples)), key=lambda i: (_same(examples[i]), i))[:shown]
    rows = tuple(
        (
            str(i + 1),
            _clip(examples[i].prompt),
            _clip(examples[i].output_a),
            _clip(examples[i].output_b),
        )
        for i in order
    )
    title = (
        f"Side-by-side outputs ({len(rows)} of {len(examples)}, differences first; no test file)"
    )
    return _Table(title, ("#", "prompt", "A output", "B output"), rows)


def _same(example: ExampleResult) -> bool:
    return example.output_a == example.output_b


def _agreement(item: ItemResult) -> int:
    """0: one right, one wrong; 1: different outputs; 2: the same output."""
    if item.correct_a != item.correct_b:
        return 0
    return 1 if item.output_a != item.output_b else 2


def _marked(correct: bool, output: str) -> str:
    return f"{'✓' if correct else '✗'} {_clip(output)}"


def _clip(text: str, limit: int = EXAMPLE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- figures as a person reads them --------------------------------------------------------------


def _number(value: float | None, show: Callable[[float], str]) -> str:
    # None: not measured. JSON read back holds null where a NaN was written.
    if value is None:
        return NOT_MEASURED
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return show(value)


def _rate(value: float | None) -> str:
    return _number(value, lambda v: f"{v:,.1f}")


def _spread(spread: tuple[float, float] | None) -> str:
    return NOT_MEASURED if spread is None else f"{_rate(spread[0])}-{_rate(spread[1])}"


def _percent(value: float | None) -> str:
    return _number(value, lambda v: f"{v * 100:.1f} %")


def _fixed(value: float | None, digits: int) -> str:
    return _number(value, lambda v: f"{v:.{digits}f}")


def _general(value: float | None) -> str:
    return _number(value, lambda v: f"{v:.4g}")


def _signed(value: float) -> str:
    return _number(value, lambda v: f"{v:+.2f}" if abs(v) < 10 else f"{v:+.1f}")


def _ratio(value_a: float | None, value_b: float | None) -> str:
    if value_a is None or value_b is None or not value_a:
        return ""
    return _number(value_b / value_a, lambda v: f"{v:.2f}x")


def _bytes(value: float | None) -> str:
    return _scaled(value, 1024, ("B", "KiB", "MiB", "GiB", "TiB"))


def _count(value: float | None) -> str:
    return _scaled(value, 1000, ("", "k", "M", "B", "T"))


def _scaled(value: float | None, base: int, units: tuple[str, ...]) -> str:
    if value is None:
        return NOT_MEASURED
    power = 0
    while abs(value) >= base ** (power + 1) and power < len(units) - 1:
        power += 1
    if power == 0:
        return f"{value:.0f} {units[0]}".rstrip()
    return f"{value / base**power:.2f} {units[power]}"


# -- terminal ------------------------------------------------------------------------------------


def _cell(text: str) -> Text:
    """Data as a rich Text: never parsed as markup, controls shown as escapes."""
    return Text(printable(text))


def render_terminal(
    comparison: Comparison, console: Console, *, examples: int = EXAMPLES_SHOWN
) -> None:
    """Print the comparison as tables on `console`."""
    for section in _sections(comparison, examples):
        console.print()
        if isinstance(section, _Lines):
            console.print(_cell(section.title), style="bold")
            for line in section.lines:
                console.print(_cell(f"  {line}"))
            continue
        # min_width: a narrow table would wrap its title ("Trainer-logged metrics (not / ...").
        table = Table(
            title=_cell(section.title), title_justify="left", min_width=len(section.title)
        )
        for column in section.columns:
            table.add_column(_cell(column))
        for row in section.rows:
            table.add_row(*map(_cell, row))
        console.print(table)
        for note in section.notes:
            console.print(_cell(f"  {note}"))


# -- Markdown ------------------------------------------------------------------------------------

_HTML_SPECIAL = re.compile("[&<>]")
_HTML_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# What GitHub Markdown reads inside a line: escapes, code, emphasis, strikethrough, links and
# images, table cells, math, and a heading's closing #s.
_MARKDOWN_SPECIAL = re.compile(r"[\\`*_\[\]|~$#]")
# What would open a nested list when it begins a list item's content ("- " + text).
_LIST_MARKER = re.compile(r"^([-+]|\d+[.)])")


def escape_markdown(text: str) -> str:
    """`text` shown literally within a line of Markdown: in a table cell, a heading, a sentence.

    Control characters, line breaks included, become visible escapes (`\\n`), so the text stays
    in its cell and on its line; <, > and & become entities, so no HTML survives.
    """
    text = _HTML_SPECIAL.sub(lambda m: _HTML_ENTITIES[m.group()], printable(text))
    return _MARKDOWN_SPECIAL.sub(r"\\\g<0>", text)


def _markdown_item(text: str) -> str:
    """`text` as a list item: escaped, and "- 1. x" or "- - x" do not nest a list."""
    return "- " + _LIST_MARKER.sub(
        lambda m: m.group()[:-1] + "\\" + m.group()[-1], escape_markdown(text)
    )


def render_markdown(comparison: Comparison, *, examples: int = EXAMPLES_SHOWN) -> str:
    """The same sections as the terminal, as a Markdown report with GitHub tables."""
    esc = escape_markdown
    out = [f"## Comparison: {esc(comparison.a.label)} (A) and {esc(comparison.b.label)} (B)"]
    for section in _sections(comparison, examples):
        out += ["", f"### {esc(section.title)}", ""]
        if isinstance(section, _Lines):
            out += [_markdown_item(line) for line in section.lines]
            continue
        out.append(_markdown_row(section.columns))
        out.append("|" + "---|" * len(section.columns))
        out += [_markdown_row(row) for row in section.rows]
        if section.notes:
            out.append("")
            out += [_markdown_item(note) for note in section.notes]
    return "\n".join(out) + "\n"


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(escape_markdown(cell) for cell in cells) + " |"


# -- JSON and the notification line ------------------------------------------------------------


def dumps_json(comparison: Comparison) -> str:
    """Every figure, as `Comparison.to_json` holds it; NaN and Inf become null (valid JSON)."""
    return orjson.dumps(comparison.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n"


def notification_summary(comparison: Comparison) -> str:
    """One line for a desktop notification: "checkpoint-600 better: +5.0 % accuracy, p=0.03"."""
    a, b = printable(comparison.a.label), printable(comparison.b.label)
    sig, rec = comparison.significance, comparison.recommendation
    if not comparison.b.finite:
        line = f"{b} diverged: NaN/Inf in its weights or outputs"
    elif sig is not None and sig.verdict != "no significant difference":
        line = f"{b} {sig.summary}"
    elif sig is not None:
        line = f"{b} against {a}: {sig.summary}"
    elif rec is not None and rec.choice is not None:
        chosen = a if rec.choice == "a" else b
        why = rec.reasons[0].partition(": ")[2] if rec.reasons else ""
        # (The notification's title names both snapshots already.)
        line = f"use {chosen}" + (f": {why}" if why else "")
    else:
        line = f"{b} against {a}: compared, no test file"
    return _clip(printable(line), NOTIFICATION_CHARS)
