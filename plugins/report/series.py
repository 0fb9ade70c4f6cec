"""A run's metric curves for the report: read column by column, windowed, thinned for a chart.

`Store.metrics` builds a dict per point, which costs seconds over a million points; a report
needs two or three columns, so this reads the packed chunks of `metric_chunks` directly and
copies only those columns (see `daemon/metric_chunks.py` for the layout).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tunewatch.daemon.metric_chunks import unpack
from tunewatch.daemon.store import Store
from tunewatch.plugins.report.model import Series

# Points per curve in the chart: more than a 1,000-pixel-wide panel can show.
MAX_SERIES_POINTS = 2000


@dataclass(slots=True)
class Column:
    """One metric's points, oldest first (by seq); values may be NaN or Inf."""

    steps: array[int] = field(default_factory=lambda: array("q"))
    times: array[float] = field(default_factory=lambda: array("d"))
    values: array[float] = field(default_factory=lambda: array("d"))

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, steps: Sequence[int], times: Sequence[float], values: Sequence[float]) -> None:
        self.steps.extend(steps)
        self.times.extend(times)
        self.values.extend(values)

    def value_before(self, step: int) -> float | None:
        """The newest finite value logged at a step below `step`."""
        for i in range(len(self) - 1, -1, -1):
            if self.steps[i] < step and math.isfinite(self.values[i]):
                return self.values[i]
        return None


@dataclass(frozen=True, slots=True)
class RunColumns:
    """The columns asked for, over the whole run and within the period."""

    whole: dict[str, Column]
    period: dict[str, Column]


def read_columns(
    store: Store, run_id: int, names: Iterable[str], *, since: float, until: float
) -> RunColumns:
    """`names` of run `run_id`: every point, and those with `since <= time < until`."""
    wanted = list(names)
    whole = {name: Column() for name in wanted}
    period = {name: Column() for name in wanted}
    # Each chunk lists its metrics as `"name":` in its JSON header, so SQLite skips the rest.
    like = " OR ".join("names LIKE ?" for _ in wanted)
    rows = store.db.execute(
        "SELECT source, first_seq, names, data, seqs FROM metric_chunks"
        f" WHERE run_id = ? AND ({like}) ORDER BY first_seq",
        [run_id, *(f'%"{_like_escape(n)}":%' for n in wanted)],
    )
    for row in rows:
        chunk = unpack(*row)
        inside = _inside(chunk.times, since, until)
        for name in wanted:
            found = chunk.columns.get(name)
            if found is None:
                continue
            values, mask = found
            steps, times = chunk.steps, chunk.times
            if mask is not None:
                kept = [i for i, present in enumerate(mask) if present]
                steps = array("q", [steps[i] for i in kept])
                times = array("d", [times[i] for i in kept])
                values = array("d", [values[i] for i in kept])
            whole[name].add(steps, times, values)
            _add_window(period[name], steps, times, values, inside, since, until)
    return RunColumns(whole, period)


def _like_escape(name: str) -> str:
    # Metric names are canonical identifiers; a % or _ would only widen the match, and the
    # column lookup after unpacking is exact.
    return name.replace('"', "")


def _inside(times: array[float], since: float, until: float) -> bool | None:
    """True: every point is in the period; False: none is; None: some are."""
    first, last = min(times), max(times)
    if first >= since and last < until:
        return True
    if last < since or first >= until:
        return False
    return None


def _add_window(
    target: Column,
    steps: Sequence[int],
    times: Sequence[float],
    values: Sequence[float],
    inside: bool | None,
    since: float,
    until: float,
) -> None:
    if inside is False:
        return
    if inside is True:
        target.add(steps, times, values)
        return
    kept = [i for i, t in enumerate(times) if since <= t < until]
    target.add([steps[i] for i in kept], [times[i] for i in kept], [values[i] for i in kept])


def steps_per_hour(column: Column) -> float | None:
    """Steps made per hour between the first and last point of `column` (None: too few)."""
    if len(column) < 2:
        return None
    elapsed = column.times[-1] - column.times[0]
    made = column.steps[-1] - column.steps[0]
    if elapsed <= 0 or made <= 0:
        return None
    return made * 3600.0 / elapsed


def thin(column: Column, max_points: int = MAX_SERIES_POINTS) -> Series:
    """At most `max_points` finite points of `column`, by step: each bucket's lowest and highest
    value, so a spike survives thinning; NaN and Inf are left out (alerts mark them)."""
    n = len(column)
    if n <= max_points:
        picked: Iterable[int] = range(n)
    else:
        picked = _extremes(column.values, max(max_points // 2, 1))
    finite = [i for i in picked if math.isfinite(column.values[i])]
    # In step order: two sources of one run (a status file live, a checkpoint's
    # trainer_state.json later) log the same steps at different times, and a line drawn in
    # arrival order would zigzag back to step 1.
    finite.sort(key=column.steps.__getitem__)
    return Series(
        steps=tuple(column.steps[i] for i in finite),
        times=tuple(column.times[i] for i in finite),
        values=tuple(column.values[i] for i in finite),
    )


def _extremes(values: array[float], buckets: int) -> list[int]:
    n = len(values)
    picked: list[int] = []
    for b in range(buckets):
        start, end = b * n // buckets, (b + 1) * n // buckets
        bucket = values[start:end]
        if math.isfinite(sum(bucket)):  # no NaN or Inf: min, max and index all run in C
            low, high = start + bucket.index(min(bucket)), start + bucket.index(max(bucket))
        else:
            finite = [i for i in range(start, end) if math.isfinite(values[i])]
            if not finite:
                continue
            low = min(finite, key=values.__getitem__)
            high = max(finite, key=values.__getitem__)
        picked.extend(sorted({low, high}))
    return picked
