"""Rendering a report: text from the data or a file name is shown, never obeyed or rendered."""

from __future__ import annotations

import re

from tunewatch.plugins.validate.render import render_markdown, render_text
from tunewatch.plugins.validate.report import Deduction, Problem, ValidationReport

TITLE_ESCAPE = "\x1b]0;PWNED\x07"  # would retitle the terminal
HOSTILE_NAME = "/data/x\n<img src=x onerror=alert(1)>\n.jsonl"


def report_of(path: str, message: str) -> ValidationReport:
    return ValidationReport(
        path=path,
        format="openai_chat",
        examples=20,
        sha256="0" * 64,
        problems=(Problem("empty_content", "error", 3, message),),
        errors=1,
        warnings=0,
        duplicate_groups=(),
        near_duplicate_groups=(),
        tokenizer="approximate (no tokenizer)",
        prompt_tokens=None,
        answer_tokens=None,
        over_max_seq_len=0,
        score=60,
        deductions=(Deduction(40, f"1 error: {message}"),),
    )


def test_the_terminal_report_shows_escape_sequences_from_names_and_data() -> None:
    report = report_of(f"/data/{TITLE_ESCAPE}.jsonl", f"content quotes {TITLE_ESCAPE}\r")
    text = render_text(report, verbose=True)
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert text.splitlines()[0] == "/data/\\x1b]0;PWNED\\x07.jsonl"
    assert "    line 3: content quotes \\x1b]0;PWNED\\x07\\r" in text


def test_a_file_name_with_line_breaks_stays_on_the_title_line_of_a_markdown_report() -> None:
    plain = render_markdown(report_of("/data/x.jsonl", "m"))
    markdown = render_markdown(report_of(HOSTILE_NAME, "m"))
    assert len(markdown.splitlines()) == len(plain.splitlines())
    assert markdown.splitlines()[0] == (
        r"## Validation of /data/x\\n\<img src=x onerror=alert\(1\)\>\\n\.jsonl"
    )
    assert re.search(r"(?<!\\)[<>]", markdown) is None  # no HTML tag: each < and > escaped


def test_data_text_in_a_markdown_table_cannot_add_a_row_or_a_column() -> None:
    markdown = render_markdown(report_of("/data/x.jsonl", f"a|b\n| injected | row |{TITLE_ESCAPE}"))
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(rows) == 3  # header, rule, the one problem
    assert rows[2].count("|") - rows[2].count("\\|") == 5
    assert "\x1b" not in markdown  # `tunewatch validate --markdown` prints it on a terminal
