"""Text from logs and file names reaches a terminal only as visible, inert characters."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunewatch.daemon.text import printable, printable_lines, readable_file_name

BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Any text, lone surrogates included (hypothesis leaves them out unless asked).
any_text = st.text(st.characters() | st.characters(categories=["Cs"]))


def is_unsafe(char: str) -> bool:
    category = unicodedata.category(char)
    return category in ("Cc", "Cs", "Zl", "Zp") or char in BIDI_CONTROLS


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;PWNED\x07", "\\x1b]0;PWNED\\x07"),  # retitles the terminal
        ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),  # clears the screen
        ("\x9b2J", "\\x9b2J"),  # the 8-bit CSI does the same on some terminals
        ("ok\rFAKE", "ok\\rFAKE"),
        ("one\ntwo\tthree\x00", "one\\ntwo\\tthree\\x00"),
        ("\x7f", "\\x7f"),
        ("evil\u202etxt.jsonl", "evil\\u202etxt.jsonl"),  # shows as "evillnosj.txt"
        ("\u2066isolate\u2069", "\\u2066isolate\\u2069"),
        ("bad-byte-\udcff", "bad-byte-\\udcff"),  # what surrogateescape makes of byte 0xff
        ("line\u2028break", "line\\u2028break"),
    ],
)
def test_controls_become_visible_escapes(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_ordinary_text_is_unchanged() -> None:
    text = "run-a  Größe naïve 日本語 训练 🚀 loss=0.75 C:\\runs\\x [info] 'quoted' \"too\""
    assert printable(text) is text


@given(any_text)
def test_no_control_bidi_or_surrogate_survives(text: str) -> None:
    assert not any(is_unsafe(c) for c in printable(text))


@given(any_text)
def test_printing_twice_changes_nothing(text: str) -> None:
    once = printable(text)
    assert printable(once) == once


@given(st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"))))
def test_safe_text_passes_through(text: str) -> None:
    if not BIDI_CONTROLS & set(text):
        assert printable(text) == text


@given(any_text)
def test_every_safe_character_keeps_its_place(text: str) -> None:
    # Escaping only inserts: the safe characters are all there, in order.
    kept = iter(printable(text))
    assert all(c in kept for c in text if not is_unsafe(c))


def test_printable_lines_keeps_line_breaks_only() -> None:
    trace = 'Traceback:\n  File "x"\nValueError: bad \x1b]0;PWNED\x07 line\r'
    assert printable_lines(trace) == (
        'Traceback:\n  File "x"\nValueError: bad \\x1b]0;PWNED\\x07 line\\r'
    )


def test_a_file_name_keeps_its_letters_and_loses_its_controls() -> None:
    assert readable_file_name("x\n<img src=x>\u202e\udcff.jsonl") == "x_<img src=x>__.jsonl"
    assert readable_file_name("données 📊.jsonl") == "données 📊.jsonl"
