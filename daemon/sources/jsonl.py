"""Parser for JSON Lines metric logs (LLaMA-Factory `trainer_log.jsonl` and generic ones).

One JSON object per line; this is the hot path of catching up on a long log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from itertools import groupby
from typing import Any

import orjson

from tunewatch.daemon.events import MetricsLogged, RunEvent, SourceError
from tunewatch.daemon.sources.base import FileOrigin
from tunewatch.daemon.sources.columns import TIME_KEYS, column_batch
from tunewatch.daemon.sources.metric_names import (
    STEP,
    STEP_OUT_OF_RANGE,
    canonical_name,
    out_of_range_step,
    split_step,
)
from tunewatch.daemon.text import storable_text

_SNIPPET_CHARS = 200
_UNUSABLE = object()  # a line that yields no record (blank, or already reported as an error)
# Consecutive same-shaped lines from this many on travel as one MetricsBatch; fewer (a line
# appended live, an eval line between train lines) as one MetricsLogged each.
BATCH_MIN_POINTS = 16


class JsonlParser:
    """Turns each line holding a JSON object with a step into one point.

    Runs of at least `batch_min_points` lines with the same keys come out as one `MetricsBatch`
    (the catch-up of a long log); other lines as one `MetricsLogged` each.
    """

    header_lines = 0
    rewrite_keeps_rows = False

    def __init__(
        self,
        origin: FileOrigin,
        *,
        batch_min_points: int = BATCH_MIN_POINTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._origin = origin
        self._batch_min_points = max(batch_min_points, 1)
        self._clock = clock

    def parse(self, lines: Sequence[bytes], first_line_no: int) -> list[RunEvent]:
        # One clock reading per batch: the lines were all read at this moment.
        now = self._clock()
        if len(lines) >= self._batch_min_points:
            records = _load_objects(lines)
            if records is not None:
                return self._parse_records(records, first_line_no, now)
        events: list[RunEvent] = []
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        for line_no, line in enumerate(lines, first_line_no):
            try:
                record = loads(line)
            except decode_error:
                # Rare: NaN/Infinity literals (Python's json.dumps writes them), blank lines,
                # or real errors. Kept off the fast path.
                record = self._parse_slow(line, line_no, events)
                if record is _UNUSABLE:
                    continue
            if type(record) is not dict:
                events.append(self._error("not_an_object", _not_object(record, line), line_no))
                continue
            self._record_events(record, line_no, now, events)
        return events

    def _parse_records(
        self, records: list[dict[str, Any]], first_line_no: int, now: float
    ) -> list[RunEvent]:
        """Lines that all parsed to objects: same-shaped runs become columns where they can."""
        origin = self._origin
        events: list[RunEvent] = []
        start = 0
        # Records of one shape have one length; a run of equal lengths is a candidate column run.
        for _length, same_length in groupby(map(len, records)):
            end = start + len(list(same_length))
            run = records[start:end]
            batch = None
            if end - start >= self._batch_min_points:
                batch = column_batch(run, origin.run, origin.source, now)
            if batch is None:
                for line_no, record in enumerate(run, first_line_no + start):
                    self._record_events(record, line_no, now, events)
            elif batch.columns:
                events.append(batch)
            start = end
        return events

    def _record_events(
        self, record: dict[str, Any], line_no: int, now: float, events: list[RunEvent]
    ) -> None:
        step, metrics = split_step(record)
        if step is None:
            events.append(self._step_error(record, line_no))
            return
        if not metrics:
            return
        when = record.get(TIME_KEYS[0]) or record.get(TIME_KEYS[1])
        if when is not None:
            when = _unix_time(when)
        origin = self._origin
        events.append(MetricsLogged(origin.run, step, metrics, origin.source, when or now))

    def _parse_slow(self, line: bytes, line_no: int, events: list[RunEvent]) -> object:
        """Parse a line orjson refused; append any error and return `_UNUSABLE` if it is."""
        if not line.strip():
            return _UNUSABLE
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            message = f"invalid UTF-8 at byte {exc.start}: {_snippet(line)}"
            events.append(self._error("invalid_utf8", message, line_no))
            return _UNUSABLE
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            message = f"invalid JSON: {exc.msg} (column {exc.colno}): {_snippet(line)}"
        except (ValueError, RecursionError) as exc:  # e.g. an integer too long, or deep nesting
            message = f"invalid JSON: {exc}: {_snippet(line)}"
        events.append(self._error("invalid_json", message, line_no))
        return _UNUSABLE

    def _step_error(self, record: dict[str, Any], line_no: int) -> SourceError:
        out_of_range = out_of_range_step(record)
        if out_of_range is not None:
            return self._error(STEP_OUT_OF_RANGE, out_of_range, line_no)
        return self._error("missing_step", _missing_step(record), line_no)

    def _error(self, kind: str, message: str, line_no: int) -> SourceError:
        origin = self._origin
        # Messages quote keys and values: JSON may hold lone surrogates, the store cannot.
        message = storable_text(message)
        return SourceError(origin.run, origin.source, kind, message, origin.at(line_no))


def _load_objects(lines: Sequence[bytes]) -> list[dict[str, Any]] | None:
    """Every line parsed, when each is a JSON object that orjson reads; else None."""
    try:
        records = list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        return None
    return records if set(map(type, records)) == {dict} else None


def _unix_time(value: object) -> float | None:
    """A record's own `time`/`timestamp` as unix seconds, when it is a plausible number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 < value < 1e12 else None  # also rejects NaN


def _snippet(line: bytes) -> str:
    """The start of a line for an error message: enough to recognise it, never megabytes."""
    text = line[: _SNIPPET_CHARS * 4].decode("utf-8", "replace")
    return text if len(text) <= _SNIPPET_CHARS else text[:_SNIPPET_CHARS] + "…"


def _not_object(record: object, line: bytes) -> str:
    kind = {list: "an array", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(record), "a number"
    )
    return f"expected one JSON object per line, got {kind}: {_snippet(line)}"


def _missing_step(record: dict[str, object]) -> str:
    bad = [f"{key}={value!r}" for key, value in record.items() if canonical_name(key) == STEP]
    if bad:
        found = ", ".join(bad)[:_SNIPPET_CHARS]
        return f"no usable step: {found} (a step must be a non-negative integer)"
    keys = ", ".join(record)[:_SNIPPET_CHARS]
    return (
        "no step field (looked for step, global_step, current_steps, iteration); "
        f"keys present: {keys or 'none'}"
    )
