"""Stream the records of a JSONL file or a JSON array file with bounded memory.

Every record carries its 1-based line (JSONL) or element number (JSON array); bad bytes or bad
JSON become an error record instead of an exception, so one broken row never stops a validation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

CHUNK_BYTES = 1 << 20
# An element that has not parsed after this much text is broken, not merely unfinished.
MAX_ELEMENT_CHARS = 256 << 20
_BOM = b"\xef\xbb\xbf"
_WS = " \t\r\n"
# Bytes that failed to decode come back as lone surrogates (errors="surrogateescape").
_SURROGATE = re.compile("[\udc80-\udcff]")
# Strings (with escapes) are skipped whole so their brackets and commas do not count.
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},]', re.DOTALL)


class UnreadableInput(Exception):
    """The path cannot be validated at all: missing, a directory, empty, or not JSON."""


@dataclass(frozen=True, slots=True)
class Record:
    """One row: its value, or the category and message of why it could not be read."""

    line: int
    value: Any = None
    error: str | None = None  # "invalid_json" or "invalid_utf8"
    message: str = ""


def open_checked(path: Path) -> BinaryIO:
    """Open `path` for reading, or raise UnreadableInput saying why not."""
    if not path.exists():
        raise UnreadableInput(f"{path}: no such file")
    if path.is_dir():
        raise UnreadableInput(f"{path}: is a directory")
    if path.stat().st_size == 0:
        raise UnreadableInput(f"{path}: empty file")
    try:
        return path.open("rb")
    except OSError as exc:
        raise UnreadableInput(f"{path}: {exc.strerror}") from exc


def detect_container(head: bytes) -> str:
    """'array' when the first non-blank character is '[', else 'jsonl'."""
    stripped = head.removeprefix(_BOM).lstrip(b" \t\r\n")
    return "array" if stripped.startswith(b"[") else "jsonl"


def read_records(
    stream: BinaryIO, *, on_bytes: Callable[[int], None] | None = None
) -> Iterator[Record]:
    """Yield every record of `stream`, JSONL or JSON array, detected from its first bytes."""
    head = stream.read(CHUNK_BYTES)
    if detect_container(head) == "array":
        yield from _array_records(head, stream, on_bytes)
    else:
        yield from _jsonl_records(head, stream, on_bytes)


def _jsonl_records(
    head: bytes, stream: BinaryIO, on_bytes: Callable[[int], None] | None
) -> Iterator[Record]:
    pending = head.removeprefix(_BOM)
    consumed = len(head)
    number = 0
    while True:
        # Split whole lines out of the buffer; the tail waits for the next chunk.
        lines = pending.split(b"\n")
        pending = lines.pop()
        for raw in lines:
            number += 1
            record = _jsonl_line(number, raw)
            if record is not None:
                yield record
        chunk = stream.read(CHUNK_BYTES)
        if not chunk:
            break
        consumed += len(chunk)
        if on_bytes is not None:
            on_bytes(consumed)
        pending += chunk
    if pending.strip():
        record = _jsonl_line(number + 1, pending)
        if record is not None:
            yield record


def _jsonl_line(number: int, raw: bytes) -> Record | None:
    if not raw.strip():
        return None
    try:
        return Record(number, orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Record(number, error="invalid_utf8", message=f"invalid UTF-8: {uexc.reason}")
        return Record(number, error="invalid_json", message=f"invalid JSON: {exc}")


class _ArrayStream:
    """A sliding text buffer over a byte stream, decoded incrementally."""

    def __init__(self, head: bytes, stream: BinaryIO, on_bytes: Callable[[int], None] | None):
        import codecs

        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._stream = stream
        self._on_bytes = on_bytes
        self._consumed = len(head)
        self.text = self._decoder.decode(head.removeprefix(_BOM))
        self.pos = 0
        self.eof = False

    def more(self) -> bool:
        """Append the next chunk; drop what was consumed. False at end of file."""
        if self.eof:
            return False
        chunk = self._stream.read(CHUNK_BYTES)
        self.text = self.text[self.pos :]
        self.pos = 0
        if not chunk:
            self.eof = True
            self.text += self._decoder.decode(b"", final=True)
            return False
        self._consumed += len(chunk)
        if self._on_bytes is not None:
            self._on_bytes(self._consumed)
        self.text += self._decoder.decode(chunk)
        return True

    def skip_ws(self) -> str:
        """The next non-blank character ('' at end of file), leaving pos on it."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""


def _array_records(
    head: bytes, stream: BinaryIO, on_bytes: Callable[[int], None] | None
) -> Iterator[Record]:
    buf = _ArrayStream(head, stream, on_bytes)
    decoder = json.JSONDecoder()
    buf.skip_ws()
    buf.pos += 1  # the '[' that detect_container saw
    number = 0
    while True:
        char = buf.skip_ws()
        if char in ("]", ""):
            return
        number += 1
        yield _array_element(buf, decoder, number)
        char = buf.skip_ws()
        if char == ",":
            buf.pos += 1
        elif char != "]" and char != "":
            # A missing comma: report it on the next element and carry on.
            number += 1
            yield Record(number, error="invalid_json", message="invalid JSON: expected ','")
            _resync(buf)
            if buf.skip_ws() == ",":
                buf.pos += 1


def _array_element(buf: _ArrayStream, decoder: json.JSONDecoder, number: int) -> Record:
    while True:
        try:
            value, end = decoder.raw_decode(buf.text, buf.pos)
        except json.JSONDecodeError as exc:
            unfinished = len(buf.text) - buf.pos < MAX_ELEMENT_CHARS
            if unfinished and buf.more():
                continue
            start = buf.pos
            _resync(buf)
            if _SURROGATE.search(buf.text, start, buf.pos):
                return Record(number, error="invalid_utf8", message="invalid UTF-8 in element")
            return Record(number, error="invalid_json", message=f"invalid JSON: {exc.msg}")
        start, buf.pos = buf.pos, end
        if _SURROGATE.search(buf.text, start, end):
            return Record(number, error="invalid_utf8", message="invalid UTF-8 in element")
        return Record(number, value)


def _resync(buf: _ArrayStream) -> None:
    """Move pos to the ',' or ']' that ends the current (broken) element at depth zero."""
    depth = 0
    while True:
        for match in _STRUCTURE.finditer(buf.text, buf.pos):
            token = match.group()
            if token in "[{":
                depth += 1
            elif token in "]}" and depth > 0:
                depth -= 1
            elif depth == 0 and token in ",]":
                buf.pos = match.start()
                return
        buf.pos = len(buf.text)
        if not buf.more():
            return
