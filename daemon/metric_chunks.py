"""How metric points are packed into rows of the store: a few hundred points per row, by column.

A row holds consecutive points (by seq) of one source. Steps, times and each metric are packed
arrays of 64-bit numbers, so a whole `MetricsBatch` is stored with a handful of `tobytes()`
calls and NaN/Inf survive bit for bit. A metric that some points lack carries a presence mask.
An old row can be thinned (`PackedChunk.thinned`); it then lists the seqs of the points it kept.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import orjson

from tunewatch.daemon.events import MetricsBatch, MetricsLogged

# Points per row: large enough that a row costs little per point, small enough that reading
# the newest points of a run decodes little.
CHUNK_POINTS = 1024
_LITTLE = sys.byteorder == "little"
_Array = TypeVar("_Array", "array[int]", "array[float]")  # array is generic from 3.12 on


@dataclass(frozen=True, slots=True)
class PackedChunk:
    """One row of `metric_chunks`, ready to insert (or as read back)."""

    source: str
    first_seq: int
    steps: array[int]
    times: array[float]
    # name -> (values, presence mask or None when every point has the metric)
    columns: dict[str, tuple[array[float], bytes | None]]
    # Each point's seq once the chunk was thinned; None while they run from first_seq on.
    seqs: array[int] | None = None

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs is not None else self.first_seq + len(self.steps) - 1

    def seqs_data(self) -> bytes | None:
        return None if self.seqs is None else _bytes(self.seqs)

    def names_text(self) -> str:
        """Each metric name mapped to 1 if it has a mask, as JSON: `LIKE '%"loss":%'` finds it."""
        return orjson.dumps(
            {n: int(mask is not None) for n, (_, mask) in self.columns.items()}
        ).decode()

    def data(self) -> bytes:
        """Steps, times, then each column's values and its mask if any, little-endian."""
        parts = [_bytes(self.steps), _bytes(self.times)]
        for values, mask in self.columns.values():
            parts.append(_bytes(values))
            if mask is not None:
                parts.append(mask)
        return b"".join(parts)

    def points(self) -> Iterator[tuple[int, int, float, dict[str, float]]]:
        """(seq, step, time, metrics) of each point, oldest first."""
        columns = list(self.columns.items())
        for i, (step, when) in enumerate(zip(self.steps, self.times, strict=True)):
            metrics = {
                name: values[i] for name, (values, mask) in columns if mask is None or mask[i]
            }
            yield self._seq(i), step, when, metrics

    def _seq(self, i: int) -> int:
        return self.seqs[i] if self.seqs is not None else self.first_seq + i

    def thinned(self, keep_every: int) -> PackedChunk:
        """Every `keep_every`-th point, plus the points a person would look for in old history.

        Kept besides: the first and last point, the highest step, each non-finite value, and
        each metric's lowest and highest value. Kept points are unchanged, seq included.
        """
        n = len(self)
        keep = set(range(0, n, max(keep_every, 1)))
        keep.update((n - 1, max(range(n), key=self.steps.__getitem__)))
        for values, mask in self.columns.values():
            present = [i for i in range(n) if mask is None or mask[i]]
            keep.update(i for i in present if not math.isfinite(values[i]))
            finite = [i for i in present if math.isfinite(values[i])]
            if finite:
                keep.add(min(finite, key=values.__getitem__))
                keep.add(max(finite, key=values.__getitem__))
        kept = sorted(keep)
        seqs = array("q", [self._seq(i) for i in kept])
        columns: dict[str, tuple[array[float], bytes | None]] = {}
        for name, (values, mask) in self.columns.items():
            # Each metric keeps at least its extremes, so no column is left empty.
            picked = None if mask is None else bytes(mask[i] for i in kept)
            columns[name] = (array("d", [values[i] for i in kept]), picked)
        return PackedChunk(
            self.source,
            self.first_seq,
            array("q", [self.steps[i] for i in kept]),
            array("d", [self.times[i] for i in kept]),
            columns,
            seqs,
        )


INSERT_SQL = (
    "INSERT INTO metric_chunks (run_id, source, first_seq, last_seq, n, max_step, last_time,"
    " names, data, seqs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def chunk_rows(run_id: int, chunks: Sequence[PackedChunk]) -> list[tuple[object, ...]]:
    """The `metric_chunks` rows of `chunks`, for `executemany(INSERT_SQL, ...)`."""
    return [
        (
            run_id,
            c.source,
            c.first_seq,
            c.last_seq,
            len(c),
            max(c.steps),
            c.times[-1],
            c.names_text(),
            c.data(),
            c.seqs_data(),
        )
        for c in chunks
    ]


def unpack(source: str, first_seq: int, names: str, data: bytes, seqs: bytes | None) -> PackedChunk:
    """The chunk a row holds: the inverse of `names_text()`, `data()` and `seqs_data()`."""
    layout: dict[str, int] = orjson.loads(names)
    # data = 8 bytes of step, 8 of time, 8 per column and 1 per masked column, for each point
    n = len(data) // (16 + 8 * len(layout) + sum(layout.values()))
    view = memoryview(data)
    steps = _array(array("q"), view[: 8 * n])
    times = _array(array("d"), view[8 * n : 16 * n])
    offset = 16 * n
    columns: dict[str, tuple[array[float], bytes | None]] = {}
    for name, masked in layout.items():
        values = _array(array("d"), view[offset : offset + 8 * n])
        offset += 8 * n
        mask = None
        if masked:
            mask = bytes(view[offset : offset + n])
            offset += n
        columns[name] = (values, mask)
    point_seqs = None if seqs is None else _array(array("q"), memoryview(seqs))
    return PackedChunk(source, first_seq, steps, times, columns, point_seqs)


def pack_batch(batch: MetricsBatch) -> list[PackedChunk]:
    """A stored batch (its seq stamped) as rows of at most CHUNK_POINTS points."""
    chunks = []
    for start in range(0, len(batch), CHUNK_POINTS):
        end = start + CHUNK_POINTS
        chunks.append(
            PackedChunk(
                batch.source,
                batch.seq + start,
                batch.steps[start:end],
                batch.times[start:end],
                {name: (values[start:end], None) for name, values in batch.columns.items()},
            )
        )
    return chunks


def pack_points(points: Sequence[MetricsLogged]) -> PackedChunk:
    """Single points of one source with consecutive seqs (stamped) as one row."""
    steps = array("q", [p.step for p in points])
    times = array("d", [p.time for p in points])
    names: dict[str, None] = {}
    for p in points:
        names.update(dict.fromkeys(p.metrics))
    columns: dict[str, tuple[array[float], bytes | None]] = {}
    for name in names:
        present = [name in p.metrics for p in points]
        values = array("d", [p.metrics.get(name, 0.0) for p in points])
        columns[name] = (values, None if all(present) else bytes(present))
    return PackedChunk(points[0].source, points[0].seq, steps, times, columns)


def _array(arr: _Array, data: memoryview) -> _Array:
    arr.frombytes(data)
    if not _LITTLE:
        arr.byteswap()
    return arr


def _bytes(arr: array[int] | array[float]) -> bytes:
    if _LITTLE:
        return arr.tobytes()
    swapped = array(arr.typecode, arr)
    swapped.byteswap()
    return swapped.tobytes()
