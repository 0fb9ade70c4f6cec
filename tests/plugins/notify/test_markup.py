"""Untrusted text is shown as the characters it is: one bounded line, never read as markup."""

from __future__ import annotations

from tunewatch.plugins.notify.markup import escape_markup, one_line


def test_markup_characters_become_entities() -> None:
    text = "<b>x</b> & <img src=y> \"q\" 'a'"
    assert escape_markup(text) == (
        "&lt;b&gt;x&lt;/b&gt; &amp; &lt;img src=y&gt; &quot;q&quot; &#39;a&#39;"
    )


def test_an_entity_in_the_input_is_escaped_too_so_it_is_shown_as_typed() -> None:
    assert escape_markup("&lt;") == "&amp;lt;"


def test_control_characters_and_newlines_fold_into_one_line() -> None:
    assert one_line("run\x00-a\n\tstep\r\n 3\x1b[31m") == "run -a step 3 [31m"


def test_long_text_is_cut_with_an_ellipsis() -> None:
    cut = one_line("x" * 500, 20)
    assert len(cut) == 20
    assert cut.endswith("…")


def test_short_text_is_unchanged() -> None:
    assert one_line("run-a", 5) == "run-a"
