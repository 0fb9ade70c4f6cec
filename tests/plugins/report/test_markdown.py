"""The report's Markdown: hostile names from files stay text, tables keep their cells."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.token import Token

from tunewatch.daemon import events as ev
from tunewatch.daemon.store import Store
from tunewatch.daemon.text import printable
from tunewatch.plugins.report.content import collect_report
from tunewatch.plugins.report.markdown import code_block, escape_markdown, render_markdown

from .stores import HOUR, SINCE, UNTIL, StoreBuilder, anomaly

HOSTILE = "a| b `c` *x* <script>alert(1)</script> [a](javascript:x)\n| injected | row |"


def markdown_it() -> MarkdownIt:
    return MarkdownIt("commonmark").enable("table")


def walk(tokens: list[Token]) -> Iterator[Token]:
    for token in tokens:
        yield token
        yield from walk(token.children or [])


def test_hostile_run_and_file_names_stay_text(tmp_path: Path) -> None:
    builder = StoreBuilder(tmp_path)
    run = f"run {HOSTILE}"
    builder.points(run, [1, 2], [UNTIL - 60, UNTIL - 30], {"loss": [1.0, 2.0]})
    builder.record(
        ev.ValidationFinished(
            run, f"/data/{HOSTILE}.jsonl", 40, "fix", 1, 0, f"/r/{HOSTILE}.md", time=UNTIL - HOUR
        ),
        anomaly(run, 2, "loss_spike", severity="normal", push=True),
        ev.ComparisonFinished(run, "/s/`a`", "/s/b", "/s/b", HOSTILE, None, time=UNTIL - HOUR),
    )
    store = Store(builder.close(), readonly=True)
    report = collect_report(store, since=SINCE, until=UNTIL, now=UNTIL)
    store.close()
    markdown = render_markdown(report, "chart.png")
    tokens = list(walk(markdown_it().parse(markdown)))

    assert not [t for t in tokens if t.type in ("html_inline", "html_block", "link_open")]
    (image,) = [t for t in tokens if t.type == "image"]
    assert image.attrGet("src") == "chart.png"
    assert not [t for t in tokens if t.type in ("em_open", "strong_open") and "run" in t.markup]
    # Every table row has as many cells as its header: no pipe broke out.
    for table in re.split(r"\n\n", markdown):
        rows = [line for line in table.splitlines() if line.startswith("| ")]
        cells = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
        assert len(cells) <= 1, table
    # And the names read as they are (their newline shown as \n).
    text = "".join(t.content for t in tokens if t.type == "text")
    assert printable(HOSTILE) in text
    # The command that names a hostile path is in a fence it cannot close.
    fences = [t for t in tokens if t.type == "fence"]
    assert any(f"/r/{printable(HOSTILE)}.md" in f.content for f in fences)


@given(st.text(alphabet=st.sampled_from("|`*_<>[]()&\\#-+=!~$.1 a\n\r\x1b\u202e"), max_size=30))
def test_escaped_text_renders_as_itself_in_a_table_cell(text: str) -> None:
    cell = escape_markdown(text)
    tokens = list(walk(markdown_it().parse(f"| h |\n|---|\n| {cell} |\n")))
    kinds = {t.type for t in tokens if t.level >= 0} - {
        "table_open",
        "thead_open",
        "tr_open",
        "th_open",
        "inline",
        "text",
        "th_close",
        "tr_close",
        "thead_close",
        "tbody_open",
        "td_open",
        "td_close",
        "tbody_close",
        "table_close",
    }
    assert kinds == set()
    body = [t for t in tokens if t.type == "inline"][1]
    assert "".join(c.content for c in body.children or []) == printable(text).strip(" ")


@given(st.text(alphabet=st.sampled_from("|`*_<>[]&\\#-+=!1 a\n"), max_size=30))
def test_escaped_text_renders_as_itself_as_a_list_item(text: str) -> None:
    tokens = list(walk(markdown_it().parse(f"- {escape_markdown(text)}\n")))
    assert [t.type for t in tokens if t.type.endswith("_open")] == [
        "bullet_list_open",
        "list_item_open",
        "paragraph_open",
    ][: 3 if text.strip(" ") else 2]
    content = "".join(t.content for t in tokens if t.type == "text")
    assert content == printable(text).strip(" ")


@pytest.mark.parametrize("command", ["rm -rf -- '/a/```b'", "tail -- x", "`````"])
def test_a_command_fence_is_longer_than_any_backtick_run_in_it(command: str) -> None:
    (fence,) = [t for t in markdown_it().parse("\n".join(code_block(command))) if t.type == "fence"]
    assert fence.content == command + "\n"


def test_escape_markdown_examples() -> None:
    assert escape_markdown("a|b") == "a\\|b"
    assert escape_markdown("<script>") == "&lt;script&gt;"
    assert escape_markdown("[x](javascript:y)") == "\\[x\\](javascript:y)"
    assert escape_markdown("1. item") == "1\\. item"
    assert escape_markdown("line\nbreak") == "line\\\\nbreak"  # shows as line\nbreak
