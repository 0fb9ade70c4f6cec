"""Text from logs and file names is data: make it safe to print on a terminal line.

A log line or a file name can hold escape sequences that retitle or repaint a terminal, or bidi
controls that reorder what a person reads; these become visible escapes such as `\\x1b`.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls (the 8-bit CSI U+009B among them), the line and paragraph
# separators, bidi embeddings, overrides and isolates, and lone surrogates (what bytes decoded
# with surrogateescape leave behind; a terminal would get them as garbage or not at all).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    # ascii() spells each of these as Python would in a literal: \n, \x1b, \u202e, \udcff.
    return ascii(match.group())[1:-1]


def printable(text: str) -> str:
    """`text` with every control, bidi and surrogate character replaced by a visible escape.

    Everything else, non-ASCII letters and emoji included, is left alone, so printing the result
    twice changes nothing.
    """
    if _UNSAFE.search(text) is None:  # the common case: one scan in C, no new string
        return text
    return _UNSAFE.sub(_escape, text)


def readable_file_name(name: str) -> str:
    """`name` for a file tunewatch writes: each control, bidi or surrogate character becomes `_`."""
    return _UNSAFE.sub("_", name)


def printable_lines(text: str) -> str:
    """Like `printable`, but keeps the line breaks of multi-line text such as a traceback."""
    return "\n".join(printable(line) for line in text.split("\n"))


__all__ = ["printable", "printable_lines", "readable_file_name"]


# -- text the store can hold -------------------------------------------------------------------
#
# SQLite and orjson take only strings that encode as UTF-8, but a lone surrogate is valid JSON
# (`"\ud800"`) and is what bytes decoded with surrogateescape (odd file names) leave behind.
# Such a character is kept visible as its escape, the 6 characters `\ud800`, instead of
# stopping ingest.


def storable_text(text: str) -> str:
    """`text` with each lone surrogate replaced by its `\\udXXX` escape; other text unchanged."""
    if text.isascii():  # nearly every name and message: one check in C, no copy
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
