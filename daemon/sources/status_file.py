"""Parser for a trainer's `training_status.json`: status, progress, pid and latest metrics.

The file is rewritten on every update; the cursor keeps what was already reported.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from tunewatch.daemon.events import MetricsLogged, RunEvent, SourceError, StatusChanged
from tunewatch.daemon.sources.base import FileOrigin, load_document, written_at
from tunewatch.daemon.sources.metric_names import (
    STEP_OUT_OF_RANGE,
    as_step,
    out_of_range_step,
    split_step,
)
from tunewatch.daemon.text import storable_text

_TOTAL_KEYS = ("total_steps", "max_steps")


@dataclass
class _Cursor:
    """What was already reported; persisted as compact JSON of these fields."""

    status: str | None = None
    total_steps: int | None = None
    pid: int | None = None
    step: int = -1  # the highest step whose metrics were emitted
    bad_step: str | None = None  # why the step was last unusable, as reported

    @classmethod
    def load(cls, text: str | None) -> _Cursor:
        if text is None:
            return cls()
        try:
            cursor = cls(**json.loads(text))
        except (ValueError, TypeError):  # not ours: start afresh rather than crash
            return cls()
        return cursor if isinstance(cursor.step, int) else cls()

    def reported(self) -> tuple[str | None, int | None, int | None]:
        return self.status, self.total_steps, self.pid

    def dump(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


class StatusFileParser:
    """Reports status/total/pid changes and the metrics of each new step in the status file."""

    def __init__(self, origin: FileOrigin) -> None:
        self._origin = origin

    def parse(
        self, data: bytes, cursor: str | None, *, written: float | None = None
    ) -> tuple[list[RunEvent], str | None]:
        document = load_document(data)
        origin = self._origin
        if not isinstance(document, dict):
            found = type(document).__name__
            message = f"status file should hold a JSON object, found {found}"
            return [self._error("unexpected_shape", message)], cursor
        state = _Cursor.load(cursor)
        now = written_at(written)
        events: list[RunEvent] = []
        step, metrics = split_step(document)
        out_of_range = out_of_range_step(document) if step is None else None
        if out_of_range is not None and out_of_range != state.bad_step:
            events.append(self._error(STEP_OUT_OF_RANGE, out_of_range))  # the status still counts
        state.bad_step = out_of_range
        status = _status(document.get("status"))
        total = _first_step(document, _TOTAL_KEYS)
        pid = as_step(document.get("pid")) or None  # pid 0 is no process
        if status is not None and (status, total, pid) != state.reported():
            changed = StatusChanged(
                origin.run, status, origin.source, step, total_steps=total, pid=pid, time=now
            )
            events.append(changed)
            state.status, state.total_steps, state.pid = status, total, pid
        if step is not None and step > state.step and metrics:
            events.append(MetricsLogged(origin.run, step, metrics, origin.source, now))
            state.step = step
        return events, state.dump()

    def _error(self, kind: str, message: str) -> SourceError:
        origin = self._origin
        return SourceError(origin.run, origin.source, kind, message, origin.location)


def _status(value: object) -> str | None:
    """The status as a lower-case word ("training", "completed"), so consumers match it exactly."""
    if not isinstance(value, str) or not value.strip():
        return None
    return storable_text(value.strip().lower())


def _first_step(document: dict[str, object], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = as_step(document.get(key))
        if value is not None:
            return value
    return None
