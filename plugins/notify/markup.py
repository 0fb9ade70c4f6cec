"""Text from logs, file names and data made safe to show: one line, bounded, escaped for markup.

Notification servers may interpret a subset of HTML in the body (<b>, <a href>, <img>...), so a
run called `<img src=x>` must reach the person as those characters, never as an image.
"""

from __future__ import annotations

import re

# Control characters (NUL cannot even travel over D-Bus) and whitespace runs fold into one space.
_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")
_ENTITIES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})

DEFAULT_LIMIT = 120


def one_line(text: str, limit: int = DEFAULT_LIMIT) -> str:
    """`text` on one line with control characters removed, cut to `limit` characters with `…`."""
    flat = _CONTROL.sub(" ", text).strip()
    if len(flat) <= limit:
        return flat
    return flat[: max(limit - 1, 0)].rstrip() + "…"


def escape_markup(text: str) -> str:
    """`text` with &, <, > and quotes as entities, so a markup-aware server shows it literally."""
    return text.translate(_ENTITIES)
