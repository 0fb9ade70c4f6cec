"""Untrusted text is shown as the characters it is, never read as markup."""

from __future__ import annotations

from tunewatch.plugins.notify.markup import escape_markup


def test_markup_characters_become_entities() -> None:
    text = "<b>x</b> & <img src=y> \"q\" 'a'"
    assert escape_markup(text) == (
        "&lt;b&gt;x&lt;/b&gt; &amp; &lt;img src=y&gt; &quot;q&quot; &#39;a&#39;"
    )


def test_an_entity_in_the_input_is_escaped_too_so_it_is_shown_as_typed() -> None:
    assert escape_markup("&lt;") == "&amp;lt;"
