"""Text made safe for notification markup: escaped, so it is shown as the characters it is.

Notification servers may interpret a subset of HTML in the body (<b>, <a href>, <img>...), so a
run called `<img src=x>` must reach the person as those characters, never as an image. (Folding
text onto one bounded line is `tunewatch.plugins.alert_messages.one_line`.)
"""

from __future__ import annotations

_ENTITIES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})


def escape_markup(text: str) -> str:
    """`text` with &, <, > and quotes as entities, so a markup-aware server shows it literally."""
    return text.translate(_ENTITIES)
