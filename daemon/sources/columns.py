"""Turns a run of same-shaped JSON records into one `MetricsBatch`, a column at a time.

Catching up on a long log is mostly lines of one shape. Reading them column by column costs a few
C-level passes per metric instead of a dict and an event per line. A column that is not all plain
numbers (quoted numbers, words, null) is read value by value with `as_metric`, the per-record
rule. Whenever the records cannot make one batch (a step that is not a plain integer, a metric
in some records only), the caller applies `split_step` to each record instead: the points are
the same either way, only slower.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

from tunewatch.daemon.events import MetricsBatch
from tunewatch.daemon.sources.metric_names import MAX_SANE_STEP, as_metric, key_layout

# The keys a JSONL record may carry its own time under, in the order the per-line parser reads them.
TIME_KEYS = ("time", "timestamp")
_NUMBERS = frozenset({float, int})  # exact types: bool, an int subclass, is not a metric
_MAX_UNIX_TIME = 1e12


def column_batch(
    records: Sequence[dict[str, Any]], run: str, source: str, now: float
) -> MetricsBatch | None:
    """The records as one batch, or None when some value needs the per-record rules.

    Every record must have the same keys as the first, in any order. A batch without columns
    means that the records hold no metric at all, which is not an error (a progress-only line).
    """
    first = records[0]
    step_keys, metric_keys = key_layout(tuple(first))
    if len(step_keys) != 1 or len({name for _, name in metric_keys}) != len(metric_keys):
        return None  # which spelling wins would depend on each record's key order
    # Records of equal length whose keys all together are the first's keys have exactly its keys.
    if set(map(len, records)) != {len(first)} or set().union(*records) != first.keys():
        return None
    steps = _steps([r[step_keys[0]] for r in records])
    if steps is None:
        return None
    times = _times(records, first, now)
    if times is None:
        return None
    columns: dict[str, array[float]] = {}
    for key, name in metric_keys:
        raw = [r[key] for r in records]
        column = _plain_numbers(raw)
        if column is None:
            # Text, null, a flag, or an integer beyond float range: `split_step`'s rule, value by
            # value. A key whose values all spell numbers ("1.2") is a column too.
            numbers = [n for n in map(as_metric, raw) if n is not None]
            if len(numbers) == len(raw):
                column = array("d", numbers)
            elif numbers:
                return None  # a metric present in some points only: not a column
        # A key that never holds a number (a note, a flag) is not a metric, as split_step says.
        if column is not None:
            columns[name] = column
    return MetricsBatch(run, source, steps, times, columns)


def _plain_numbers(raw: list[Any]) -> array[float] | None:
    """The column, when every value is a plain int or float (the common case, all in C)."""
    if not set(map(type, raw)) <= _NUMBERS:
        return None
    try:
        return array("d", raw)
    except OverflowError:  # an integer beyond float range: split_step makes it infinite
        return None


def _steps(raw: list[Any]) -> array[int] | None:
    if set(map(type, raw)) != {int} or min(raw) < 0 or max(raw) > MAX_SANE_STEP:
        return None  # a step that needs the per-record rules, or an error to report
    return array("q", raw)


def _times(
    records: Sequence[dict[str, Any]], first: dict[str, Any], now: float
) -> array[float] | None:
    key = next((k for k in TIME_KEYS if k in first), None)
    if key is None:
        return array("d", (now,)) * len(records)
    raw = [r[key] for r in records]
    # The per-line rule: a plausible unix time, else the batch's clock; here all or none.
    if not set(map(type, raw)) <= _NUMBERS or not all(0 < t < _MAX_UNIX_TIME for t in raw):
        return None
    return array("d", raw)
