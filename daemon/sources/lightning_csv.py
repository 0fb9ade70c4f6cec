"""Parser for PyTorch Lightning CSVLogger `metrics.csv` (header row, then sparse metric rows).

When a new metric appears Lightning rewrites the file with a wider header; the tailer re-feeds
line 1 and skips rows already delivered, so this parser only has to track the latest header.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence

from tunewatch.daemon.events import MetricsLogged, RunEvent, SourceError
from tunewatch.daemon.sources.base import FileOrigin
from tunewatch.daemon.sources.metric_names import (
    STEP_OUT_OF_RANGE,
    number_from_text,
    out_of_range_step,
    split_step,
)

_SNIPPET_CHARS = 200


class LightningCsvParser:
    """Turns each data row with a step into one `MetricsLogged`; empty cells are absent metrics."""

    header_lines = 1
    rewrite_keeps_rows = True

    def __init__(self, origin: FileOrigin, *, clock: Callable[[], float] = time.time) -> None:
        self._origin = origin
        self._header: list[str] | None = None
        self._clock = clock

    def parse(self, lines: Sequence[bytes], first_line_no: int) -> list[RunEvent]:
        now = self._clock()
        events: list[RunEvent] = []
        for line_no, line in enumerate(lines, first_line_no):
            event = self._parse_line(line, line_no, now)
            if event is not None:
                events.append(event)
        return events

    def _parse_line(self, line: bytes, line_no: int, now: float) -> RunEvent | None:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            if line_no == 1:
                self._header = None  # rows can no longer be read against the old header
            return self._error("invalid_utf8", f"invalid UTF-8 at byte {exc.start}", line_no)
        if line_no == 1:
            return self._read_header(text)
        if not text.strip():
            return None
        if self._header is None:
            message = "data row before a usable header row: the file is not a Lightning metrics.csv"
            return self._error("missing_header", message, line_no)
        return self._read_row(text, self._header, line_no, now)

    def _read_row(self, text: str, header: list[str], line_no: int, now: float) -> RunEvent | None:
        try:
            cells = next(csv.reader((text,)))
        except csv.Error as exc:
            message = f"unreadable CSV row ({exc}): {_snippet(text)}"
            return self._error("bad_csv_row", message, line_no)
        if len(cells) != len(header):
            message = (
                f"row has {len(cells)} cells but the header has {len(header)}: {_snippet(text)}"
            )
            return self._error("bad_csv_row", message, line_no)
        numbers = _numbers(header, cells)
        step, metrics = split_step(numbers)
        if step is None:
            out_of_range = out_of_range_step(numbers)
            if out_of_range is not None:
                return self._error(STEP_OUT_OF_RANGE, out_of_range, line_no)
            return self._error("missing_step", f"row has no step: {_snippet(text)}", line_no)
        if not metrics:
            return None
        origin = self._origin
        return MetricsLogged(origin.run, step, metrics, origin.source, now)

    def _read_header(self, text: str) -> SourceError | None:
        try:
            header = next(csv.reader((text.removeprefix("\ufeff"),)), [])
        except csv.Error as exc:
            self._header = None
            return self._error("bad_csv_row", f"unreadable CSV header ({exc})", 1)
        self._header = [name.strip() for name in header]
        return None

    def _error(self, kind: str, message: str, line_no: int) -> SourceError:
        origin = self._origin
        return SourceError(origin.run, origin.source, kind, message, origin.at(line_no))


def _numbers(header: list[str], cells: list[str]) -> dict[str, float]:
    """Column name -> value of the non-empty numeric cells."""
    numbers: dict[str, float] = {}
    for name, cell in zip(header, cells, strict=True):
        if not cell:
            continue
        number = number_from_text(cell)
        if number is not None:
            numbers[name] = number
    return numbers


def _snippet(text: str) -> str:
    return text if len(text) <= _SNIPPET_CHARS else text[:_SNIPPET_CHARS] + "…"
