"""Parser for JSON Lines metric logs (LLaMA-Factory `trainer_log.jsonl` and generic ones).

One JSON object per line; this is the hot path of catching up on a long log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import orjson

from tunewatch.daemon.events import MetricsLogged, RunEvent, SourceError
from tunewatch.daemon.sources.base import FileOrigin
from tunewatch.daemon.sources.metric_names import STEP, canonical_name, split_step

_SNIPPET_CHARS = 200
_UNUSABLE = object()  # a line that yields no record (blank, or already reported as an error)


class JsonlParser:
    """Turns each line holding a JSON object with a step into one `MetricsLogged`."""

    header_lines = 0
    rewrite_keeps_rows = False

    def __init__(self, origin: FileOrigin) -> None:
        self._origin = origin

    def parse(self, lines: Sequence[bytes], first_line_no: int) -> list[RunEvent]:
        origin = self._origin
        run, source = origin.run, origin.source
        # One clock reading per batch: the lines were all read at this moment.
        now = time.time()
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
            step, metrics = split_step(record)
            if step is None:
                events.append(self._error("missing_step", _missing_step(record), line_no))
                continue
            if not metrics:
                continue
            when = record.get("time") or record.get("timestamp")
            if when is not None:
                when = _unix_time(when)
            events.append(MetricsLogged(run, step, metrics, source, when or now))
        return events

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

    def _error(self, kind: str, message: str, line_no: int) -> SourceError:
        origin = self._origin
        return SourceError(origin.run, origin.source, kind, message, origin.at(line_no))


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
