"""Rendering a comparison: the figures are there, and text from models or files is shown, never
obeyed (no terminal escapes, no rich markup, no Markdown or HTML, no extra cells or lines)."""

from __future__ import annotations

import html
import io
import json
import math
import re
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from tunewatch.daemon.text import printable
from tunewatch.plugins.compare.recommend import with_verdict
from tunewatch.plugins.compare.render import (
    TRAINER_METRICS_TITLE,
    dumps_json,
    escape_markdown,
    notification_summary,
    render_markdown,
    render_terminal,
)
from tunewatch.plugins.compare.results import Comparison, ExampleResult

from .comparisons import GIB, comparison, item, paired, side, speed

HOSTILE = [
    "a | b",
    "```",
    "`code`",
    "*x*",
    "_y_",
    "<script>alert(1)</script>",
    "[link](javascript:x)",
    "\x1b[31mred\x1b[0m",
    "\x1b]0;PWNED\x07",
    "line one\nline two\r\n| injected | row |",
    "[bold red]markup[/bold red]",
    "- 1. # $x$ ~~gone~~ &lt; \\| \\",
]
HOSTILE_TEXT = " ".join(HOSTILE)


def terminal(c: Comparison, examples: int = 3) -> str:
    file = io.StringIO()
    render_terminal(c, Console(file=file, width=120, color_system=None), examples=examples)
    return file.getvalue()


def measured() -> Comparison:
    """B clearly better on 20 items, 12 % faster decode, same size."""
    return with_verdict(
        comparison(
            side("checkpoint-400", speed=speed(decode=40.0, prefill=1500.0), accuracy=0.55),
            side("checkpoint-600", speed=speed(decode=44.8, prefill=1500.0), accuracy=0.95),
            paired(both=10, only_a=1, only_b=9),
        )
    )


def hostile(text: str) -> Comparison:
    """Every string a model, a test file or a user chose, set to `text`."""
    c = measured()
    items = tuple(
        replace(i, prompt=text, reference=text, output_a=text, output_b=text + "!") for i in c.items
    )
    return replace(
        c,
        a=replace(c.a, label=text, path=text, trainer_metrics={text: 1.0}),
        b=replace(c.b, label=text, path="/runs/" + text),
        setup=replace(c.setup, test_file=text, device=text),
        items=items,
    )


def unescaped(char: str, line: str) -> int:
    """How many `char` in a line of Markdown are not escaped by a backslash."""
    return len(re.findall(r"(?<!\\)(?:\\\\)*" + re.escape(char), line))


def tables(markdown: str) -> list[list[str]]:
    found: list[list[str]] = []
    previous = ""
    for line in markdown.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                found.append([])
            found[-1].append(line)
        previous = line
    return found


# -- the figures -------------------------------------------------------------------------------


def test_the_terminal_tables_hold_every_figure() -> None:
    out = terminal(measured())
    for expected in [
        "Speed",
        "prefill tok/s (median)",
        "1,500.0",
        "decode tok/s (median)",
        "40.0",
        "44.8",
        "1.12x",
        "39.6-40.4",  # the spread
        "Quality",
        "55.0 %",
        "95.0 %",
        "+40.0 % (95 % CI",
        "B against A: better: +40.0 % accuracy, p=0.021",
        "only A right: 1, only B right: 9; exact McNemar p=0.021",
        "Size",
        "2.00 GiB",
        "494.03 M",
        "cuda:0, bfloat16, batch 8, max_new_tokens 64, 16 prompts x 5 repeats (1 warm-up), A and B",
        "test file /data/test.jsonl (n=20)",
        "Side-by-side examples (3 of 20, disagreements first)",
        "use B (checkpoint-600)",
        "B: better than A, +40.0 % accuracy, p=0.021",
        "B: 12 % faster decode speed, same prefill speed, same size",
    ]:
        assert expected in out, expected


def test_the_markdown_report_holds_the_same_figures_in_github_tables() -> None:
    markdown = render_markdown(measured())
    assert "| decode tok/s (median) | 40.0 | 44.8 | 1.12x |" in markdown
    assert "| accuracy | 55.0 % | 95.0 % | +40.0 % (95 % CI " in markdown
    assert "| weights (safetensors) | 2.00 GiB | 2.00 GiB | 1.00x |" in markdown
    assert "- B against A: better: +40.0 % accuracy, p=0.021" in markdown
    assert "max\\_new\\_tokens 64" in markdown  # an underscore is not emphasis
    assert "### Recommendation\n\n- use B (checkpoint-600)\n" in markdown
    for table in tables(markdown):
        assert re.fullmatch(r"\|(---\|)+", table[1])
        assert {unescaped("|", row) for row in table} == {unescaped("|", table[0])}


def test_a_diverged_snapshot_is_flagged_and_its_nan_figures_shown() -> None:
    c = measured()
    c = replace(c, b=replace(c.b, finite=False, mean_log_likelihood=math.nan, perplexity=math.inf))
    out = terminal(with_verdict(c))
    assert "B holds NaN/Inf in its weights or outputs (diverged)" in out
    assert "NaN" in out and "inf" in out
    assert "use A (checkpoint-400)" in out


# -- the examples --------------------------------------------------------------------------------


def test_examples_show_disagreements_first_then_different_outputs_then_the_rest() -> None:
    items = [
        item(True, True, number=0),  # same answer
        item(True, True, number=1, output_b="answer 1, put otherwise"),  # different output
        item(False, False, number=2),  # both wrong, differently
        item(True, False, number=3),  # A right, B wrong
        item(True, True, number=4),
        item(False, True, number=5),  # B right, A wrong
    ]
    markdown = render_markdown(with_verdict(comparison(items=items)), examples=5)
    examples = tables(markdown)[-1][2:]
    assert [row.split(" | ")[0] for row in examples] == ["| 4", "| 6", "| 2", "| 3", "| 1"]
    assert examples[0].endswith("| ✓ answer 3 | ✗ off 3 |")


def test_long_outputs_are_cut_in_the_examples_table() -> None:
    long = "word " * 200
    c = replace(measured(), items=(replace(measured().items[0], output_b=long),))
    row = tables(render_markdown(c))[-1][2]
    assert len(row) < 1000 and "…" in row


# -- without a test file ---------------------------------------------------------------------------


def test_without_a_test_file_the_trainer_metrics_are_labelled_as_not_measured() -> None:
    c = with_verdict(
        comparison(
            side("checkpoint-400", trainer_metrics={"eval_loss": 1.31, "eval_accuracy": 0.5}),
            side("checkpoint-600", trainer_metrics={"eval_loss": 1.23}),
        )
    )
    out = terminal(c)
    assert TRAINER_METRICS_TITLE in out  # on one line: the title does not wrap
    assert "eval_loss" in out and "1.31" in out and "1.23" in out
    assert "accuracy  " not in out and "Side-by-side" not in out
    assert "no test file" in out
    markdown = render_markdown(c)
    assert f"### {TRAINER_METRICS_TITLE}" in markdown
    assert "| eval\\_accuracy | 0.5 | - |" in markdown


def test_without_any_quality_figure_it_says_quality_was_not_compared() -> None:
    out = terminal(with_verdict(comparison()))
    assert "not compared: no test file, and no metrics logged by the trainer" in out


# -- hostile text ----------------------------------------------------------------------------------


def test_hostile_text_cannot_break_the_markdown() -> None:
    plain = render_markdown(hostile("plain"))
    markdown = render_markdown(hostile(HOSTILE_TEXT))
    assert len(markdown.splitlines()) == len(plain.splitlines())  # no line added or lost
    assert [len(t) for t in tables(markdown)] == [len(t) for t in tables(plain)]
    for table in tables(markdown):
        assert {unescaped("|", row) for row in table} == {unescaped("|", table[0])}
    assert "<" not in markdown and ">" not in markdown  # not even an escaped one: entities
    assert "\x1b" not in markdown and "\x07" not in markdown and "\r" not in markdown
    for char in "`*_[]~$":
        assert unescaped(char, markdown) == 0, char


def test_hostile_text_is_shown_literally_on_the_terminal() -> None:
    out = terminal(hostile(HOSTILE_TEXT))
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    # Visibly escaped, markup left as text (words joined again where the terminal wrapped them).
    words = " ".join(out.split())
    assert "[bold red]markup[/bold red]" in words
    assert "\\x1b[31mred\\x1b[0m" in words
    assert "line one\\nline two\\r\\n| injected | row |" in words
    assert f"A: {printable(HOSTILE_TEXT)} (checkpoint)" in words


@given(st.text(alphabet=st.sampled_from("|`*_<>[]()&\\#-+.1 \n\r\x1b\u202ea"), max_size=30))
def test_no_text_adds_a_cell_a_line_or_a_tag_to_the_markdown(text: str) -> None:
    markdown = render_markdown(hostile(text))
    plain = render_markdown(hostile("x"))
    assert len(markdown.splitlines()) == len(plain.splitlines())
    for table in tables(markdown):
        assert {unescaped("|", row) for row in table} == {unescaped("|", table[0])}
    assert "<" not in markdown
    assert not re.search(r"^- (?:[-+*]|\d+[.)])(?: |$)", markdown, re.MULTILINE)  # no nested list


def unescape_markdown(markdown: str) -> str:
    """What a Markdown renderer shows for the escaped text: backslash escapes, then entities."""
    return html.unescape(re.sub(r"\\(.)", r"\1", markdown))


@given(st.text())
def test_escaped_markdown_shows_exactly_the_printable_text(text: str) -> None:
    escaped = escape_markdown(text)
    assert unescape_markdown(escaped) == printable(text)
    assert "\n" not in escaped and "<" not in escaped
    assert unescaped("|", escaped) == 0 and unescaped("`", escaped) == 0


def test_escape_markdown_examples() -> None:
    assert escape_markdown("a|b") == "a\\|b"
    assert escape_markdown("<script>") == "&lt;script&gt;"
    assert escape_markdown("[x](javascript:y)") == "\\[x\\](javascript:y)"
    assert escape_markdown("line\nbreak") == "line\\\\nbreak"  # shows as line\nbreak


# -- JSON and the notification ---------------------------------------------------------------------


def test_json_holds_every_figure_and_reads_back() -> None:
    c = measured()
    data = json.loads(dumps_json(c))
    assert data["b"]["speed"]["decode_tokens_per_s"] == 44.8
    assert data["significance"]["only_b_right"] == 9
    assert data["recommendation"]["choice"] == "b"
    assert Comparison.from_json(data) == c


def test_json_writes_nan_as_null_so_any_parser_reads_it() -> None:
    c = measured()
    c = replace(c, b=replace(c.b, finite=False, mean_log_likelihood=math.nan))
    text = dumps_json(c)
    assert "NaN" not in text
    assert json.loads(text)["b"]["mean_log_likelihood"] is None
    terminal(Comparison.from_json(json.loads(text)))  # read back, it still renders


def test_notification_is_one_line_naming_the_snapshot() -> None:
    assert notification_summary(measured()) == "checkpoint-600 better: +40.0 % accuracy, p=0.021"
    tie = with_verdict(comparison(items=paired(both=20)))
    assert notification_summary(tie) == (
        "checkpoint-600 against checkpoint-400: no significant difference (n=20)"
    )


def test_notification_without_a_test_file_names_the_choice_and_why() -> None:
    c = with_verdict(comparison(side("a"), side("b", weights_bytes=GIB)))
    # The notification's title names both ("Models compared: a vs b"); the body says which.
    assert notification_summary(c) == (
        "use b: quality not compared (no test file, no trainer-logged eval_loss), 50 % smaller size"
    )


def test_notification_of_a_diverged_snapshot_says_so() -> None:
    c = with_verdict(replace(measured(), b=replace(measured().b, finite=False)))
    assert notification_summary(c) == "checkpoint-600 diverged: NaN/Inf in its weights or outputs"


def test_notification_of_a_hostile_label_stays_one_short_line() -> None:
    c = hostile(HOSTILE_TEXT * 10)
    line = notification_summary(c)
    assert "\n" not in line and "\x1b" not in line and len(line) <= 200


def test_without_a_test_file_the_outputs_are_shown_side_by_side_unjudged() -> None:
    c = replace(
        comparison(side("a"), side("b")),
        examples=(
            ExampleResult("Say hi", "hi", "hi"),
            ExampleResult("Count to 3", "1 2 3", "1 2 | 3 <b>"),
        ),
    )
    text = render_markdown(c)
    assert "Side-by-side outputs (2 of 2, differences first; no test file)" in text
    rows = [
        line for line in text.splitlines() if line.startswith("| 2 |") or line.startswith("| 1 |")
    ]
    assert rows[0].startswith("| 2 |")  # the outputs that differ come first
    assert "&lt;b&gt;" in rows[0] and "✓" not in text and "✗" not in text
