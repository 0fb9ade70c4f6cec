"""Text that parsers put into events must be text the store can hold.

SQLite and orjson take only strings that encode as UTF-8, but a lone surrogate is valid JSON
(`"\\ud800"`) and is what bytes decoded with surrogateescape (odd file names) leave behind. Such
a character is kept visible as its escape, the 6 characters `\\ud800`, instead of stopping ingest.
"""

from __future__ import annotations


def storable_text(text: str) -> str:
    """`text` with each lone surrogate replaced by its `\\udXXX` escape; other text unchanged."""
    if text.isascii():  # nearly every name and message: one check in C, no copy
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


__all__ = ["storable_text"]
