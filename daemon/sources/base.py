"""The two shapes of parser a source can have, and what they return.

Append-only logs (JSONL, plain text, CSV) are read line by line by the tailer and handed to a
`LineParser`. Files that trainers rewrite whole (Hugging Face `trainer_state.json`, a status
file) are read whole and handed to a `DocumentParser` with the cursor of what was already emitted.
Parsers are pure, synchronous and never raise on bad input: problems come back as `SourceError`
events, so the daemon counts them and keeps going.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson

from tunewatch.daemon.events import RunEvent
from tunewatch.daemon.text import storable_text


@dataclass(frozen=True, slots=True)
class FileOrigin:
    """Where parsed events come from: the run they belong to and the file inside it."""

    run: str
    source: str  # the file's path relative to the run directory, e.g. "trainer_log.jsonl"
    path: str  # absolute path, as the OS spells it: it opens the file

    def __post_init__(self) -> None:
        # Every event carries the run and source names, and the store holds only UTF-8 text: a
        # file name that is not (decoded with surrogateescape) is kept as visible escapes.
        object.__setattr__(self, "run", storable_text(self.run))
        object.__setattr__(self, "source", storable_text(self.source))

    @property
    def location(self) -> str:
        """The path as error locations give it: text the store can hold."""
        return storable_text(self.path)

    def at(self, line_no: int) -> str:
        return f"{self.location}:{line_no}"


class WrittenClock:
    """When a file's new lines were written, as well as one can tell: the file's mtime (every
    line read at once was written by then), never later than now. A line with no time of its
    own gets this one: a catch-up of a log written yesterday is not news from today."""

    def __init__(self) -> None:
        self.mtime: float | None = None  # the file's, at the read in progress

    def __call__(self) -> float:
        now = time.time()
        return now if self.mtime is None else min(now, self.mtime)


def written_at(written: float | None) -> float:
    """A document's time: its mtime when known (see WrittenClock), else now."""
    now = time.time()
    return now if written is None else min(now, written)


class LineParser(Protocol):
    """Turns complete lines (bytes, newline stripped) of an append-only log into events."""

    # Leading lines that describe the rest (a CSV header). The tailer re-feeds them whenever it
    # reopens the file, so a parser never depends on having seen them in this process.
    header_lines: int
    # True when the writer rewrites the file keeping earlier rows (Lightning grows its CSV header
    # by rewriting the file): after a rewrite the tailer skips rows it already delivered.
    rewrite_keeps_rows: bool

    def parse(self, lines: Sequence[bytes], first_line_no: int) -> list[RunEvent]:
        """Parse `lines`, the first of which is line `first_line_no` (1-based) of the file."""
        ...


class IncompleteDocument(Exception):
    """The document could not be parsed yet (most likely caught mid-write); read it again later."""


class DocumentParser(Protocol):
    """Turns a whole rewritten JSON document into the events not yet emitted."""

    def parse(
        self, data: bytes, cursor: str | None, *, written: float | None = None
    ) -> tuple[list[RunEvent], str | None]:
        """Return new events and the cursor to store with them.

        `cursor` is what a previous call returned (None the first time); it is persisted in the
        store, so the same document parsed again after a restart yields no event twice.
        `written` is the file's mtime when known (a document written later is newer news).
        Raises `IncompleteDocument` for a truncated or half-written document.
        """
        ...


def load_document(data: bytes) -> object:
    """Parse a whole JSON document, NaN/Infinity literals included.

    Anything unparseable raises `IncompleteDocument`: trainers rewrite these files in place,
    so a broken document is most likely one caught mid-write.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass  # orjson refuses the NaN literal that Python's json.dumps writes for a NaN loss
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise IncompleteDocument(str(exc)) from exc
