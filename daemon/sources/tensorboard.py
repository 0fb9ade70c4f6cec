"""Parser for TensorBoard event records: the scalars of each `Event`, as metric points.

Reads the protobuf wire format of the few messages it needs by hand (Event, Summary, Value,
SummaryMetadata, TensorProto): the `tensorboard` package would bring protobuf, grpcio and numpy
into the daemon for this (docs/benchmarks.md, "TensorBoard source", has the measurements).
Scalars come as `simple_value` (torch's SummaryWriter, tensorboardX) or as one-element tensors
of the `scalars` plugin (TensorFlow 2, `new_style` writers). Images, histograms, text, hparams
and graphs are not metrics and are ignored without a word.
"""

from __future__ import annotations

import re
import struct
import time
from array import array
from collections.abc import Callable, Sequence
from itertools import groupby

from tunewatch.daemon.events import MetricsBatch, MetricsLogged, RunEvent, SourceError
from tunewatch.daemon.sources.base import FileOrigin
from tunewatch.daemon.sources.jsonl import BATCH_MIN_POINTS
from tunewatch.daemon.sources.metric_names import MAX_SANE_STEP, STEP_OUT_OF_RANGE, metric_name

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_MAX_UNIX_TIME = 1e12
_SCALARS_PLUGIN = b"scalars"
_DATA_CLASS_SCALAR = 1
# Tags remembered per parser (their plugin, their metric name); a file whose tags never repeat
# must not grow these forever.
_TAG_MEMORY = 4096

# TensorProto dtype -> how one element is stored in `tensor_content`, and the typed field that
# holds it otherwise. Only numeric types: a string tensor (text) is never a scalar metric.
_HALF_VAL, _FLOAT_VAL, _DOUBLE_VAL, _INT_VAL, _INT64_VAL, _BOOL_VAL = 13, 5, 6, 7, 10, 11
_UINT32_VAL, _UINT64_VAL = 16, 17
_DTYPES: dict[int, tuple[str, int]] = {
    1: ("<f", _FLOAT_VAL),  # DT_FLOAT
    2: ("<d", _DOUBLE_VAL),  # DT_DOUBLE
    3: ("<i", _INT_VAL),  # DT_INT32
    4: ("<B", _INT_VAL),  # DT_UINT8
    5: ("<h", _INT_VAL),  # DT_INT16
    6: ("<b", _INT_VAL),  # DT_INT8
    9: ("<q", _INT64_VAL),  # DT_INT64
    10: ("<?", _BOOL_VAL),  # DT_BOOL
    14: ("bfloat16", _HALF_VAL),  # DT_BFLOAT16: the high half of a float32
    17: ("<H", _INT_VAL),  # DT_UINT16
    19: ("<e", _HALF_VAL),  # DT_HALF
    22: ("<I", _UINT32_VAL),  # DT_UINT32
    23: ("<Q", _UINT64_VAL),  # DT_UINT64
}


# The event torch's SummaryWriter (and tensorboardX) writes for each add_scalar, byte for byte:
# Event{wall_time, step, summary{value{tag, simple_value}}} with one-byte lengths. Matched in
# one C call, it skips the general decoder for the bulk of most files; the lengths are checked
# against each other before the match is believed.
_SIMPLE_SCALAR = re.compile(
    rb"\x09(.{8})\x10([\x80-\xff]{0,9}[\x00-\x7f])\x2a(.)\x0a(.)\x0a(.)(.*)\x15(.{4})", re.DOTALL
)


class MalformedEvent(Exception):
    """A record that is not a well-formed protobuf message."""


Field = tuple[int, int, int | bytes]  # (field number, wire type, varint value or raw bytes)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    size = len(buf)
    while True:
        if pos >= size:
            raise MalformedEvent("a number runs past the end of its message")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise MalformedEvent("a number longer than 10 bytes")


def message_fields(buf: bytes) -> list[Field]:
    """Every field of one protobuf message, in order; raises `MalformedEvent`."""
    fields: list[Field] = []
    pos = 0
    size = len(buf)
    while pos < size:
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length = buf[pos] if pos < size and buf[pos] < 0x80 else -1
            if length < 0:
                length, pos = _varint(buf, pos)
            else:
                pos += 1
            value = buf[pos : pos + length]
            pos += length
        elif wire == 1:
            value = buf[pos : pos + 8]
            pos += 8
        elif wire == 5:
            value = buf[pos : pos + 4]
            pos += 4
        else:
            raise MalformedEvent(f"field {number} has wire type {wire}, which events never use")
        if pos > size or number == 0:
            raise MalformedEvent(f"field {number} runs past the end of its message")
        fields.append((number, wire, value))
    return fields


def _message(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise MalformedEvent("a number where a message belongs")
    return value


class TensorBoardParser:
    """Turns TensorBoard event records into points: one per step, carrying every scalar logged
    at that step by consecutive events, at the event's own wall time.

    Runs of at least `BATCH_MIN_POINTS` points with the same metrics come out as one
    `MetricsBatch` (a catch-up); others as one `MetricsLogged` each.
    """

    header_lines = 0
    rewrite_keeps_rows = False

    def __init__(self, origin: FileOrigin, *, clock: Callable[[], float] = time.time) -> None:
        self._origin = origin
        self._clock = clock
        # TensorFlow writes a tag's plugin metadata with its first value only.
        self._plugins: dict[bytes, bytes] = {}
        self._names: dict[bytes, str | None] = {}

    def parse(self, records: Sequence[bytes], first_record_no: int) -> list[RunEvent]:
        now = self._clock()
        points: list[tuple[int, float, dict[str, float]]] = []
        errors: list[RunEvent] = []
        for record_no, record in enumerate(records, first_record_no):
            try:
                found = self._event_scalars(record)
            except (MalformedEvent, struct.error, ValueError) as exc:
                errors.append(
                    self._error("invalid_event", f"not a TensorBoard event: {exc}", record_no)
                )
                continue
            if found is None:
                continue
            step, wall_time, scalars = found
            if not 0 <= step <= MAX_SANE_STEP:
                errors.append(self._error(STEP_OUT_OF_RANGE, _bad_step(step), record_no))
                continue
            when = wall_time if 0 < wall_time < _MAX_UNIX_TIME else now
            if points and points[-1][0] == step and scalars.keys().isdisjoint(points[-1][2]):
                points[-1][2].update(scalars)  # more of the same step (one add_scalar per tag)
            else:
                points.append((step, when, scalars))
        return [*self._point_events(points), *errors]

    def _point_events(self, points: list[tuple[int, float, dict[str, float]]]) -> list[RunEvent]:
        origin = self._origin
        events: list[RunEvent] = []
        for names, same in groupby(points, key=lambda p: tuple(p[2])):
            run = list(same)
            if len(run) < BATCH_MIN_POINTS:
                events.extend(MetricsLogged(origin.run, s, m, origin.source, t) for s, t, m in run)
                continue
            columns = {name: array("d", (p[2][name] for p in run)) for name in names}
            steps = array("q", (p[0] for p in run))
            times = array("d", (p[1] for p in run))
            events.append(MetricsBatch(origin.run, origin.source, steps, times, columns))
        return events

    def _event_scalars(self, record: bytes) -> tuple[int, float, dict[str, float]] | None:
        """(step, wall time, scalars by metric name) of one Event; None when it has none."""
        simple = _SIMPLE_SCALAR.fullmatch(record)
        if simple is not None:
            wall, raw_step, summary_len, value_len, tag_len, tag, number = simple.groups()
            if summary_len[0] == value_len[0] + 2 == tag_len[0] + 9 == len(tag) + 9:
                name = self._metric_name(tag)
                step = _varint(raw_step, 0)[0]
                step = step - (1 << 64) if step >= 1 << 63 else step
                if name is None:
                    return None
                return step, _DOUBLE.unpack(wall)[0], {name: _FLOAT.unpack(number)[0]}
        wall_time = 0.0
        step = 0
        summary: bytes | None = None
        for number, wire, value in message_fields(record):
            if number == 1 and wire == 1:
                (wall_time,) = _DOUBLE.unpack(_message(value))
            elif number == 2 and wire == 0:
                assert isinstance(value, int)
                step = value - (1 << 64) if value >= 1 << 63 else value  # int64
            elif number == 5 and wire == 2:
                summary = _message(value)
        if summary is None:
            return None  # file_version, graph, session log...
        scalars: dict[str, float] = {}
        for number, wire, value in message_fields(summary):
            if number == 1 and wire == 2:
                self._value_scalar(_message(value), scalars)
        return (step, wall_time, scalars) if scalars else None

    def _value_scalar(self, value: bytes, scalars: dict[str, float]) -> None:
        tag = b""
        number_found: float | None = None
        tensor: bytes | None = None
        metadata: bytes | None = None
        for number, wire, field in message_fields(value):
            if number == 1 and wire == 2:
                tag = _message(field)
            elif number == 2 and wire == 5:
                (number_found,) = _FLOAT.unpack(_message(field))
            elif number == 8 and wire == 2:
                tensor = _message(field)
            elif number == 9 and wire == 2:
                metadata = _message(field)
        if number_found is None and tensor is not None and self._is_scalar_tag(tag, metadata):
            number_found = tensor_scalar(tensor)
        if number_found is None:
            return
        name = self._metric_name(tag)
        if name is not None:
            scalars[name] = number_found

    def _is_scalar_tag(self, tag: bytes, metadata: bytes | None) -> bool:
        """Whether a tensor value of `tag` may be a scalar metric, by its plugin."""
        plugin = self._plugins.get(tag)
        if metadata is not None:
            plugin, data_class = _plugin_of(metadata)
            if data_class == _DATA_CLASS_SCALAR:
                plugin = _SCALARS_PLUGIN
            if len(self._plugins) >= _TAG_MEMORY:
                self._plugins.clear()
            self._plugins[tag] = plugin
        # No plugin known (metadata came before a restart): a one-number tensor is a scalar.
        return plugin in (None, b"", _SCALARS_PLUGIN)

    def _metric_name(self, tag: bytes) -> str | None:
        try:
            return self._names[tag]
        except KeyError:
            pass
        if len(self._names) >= _TAG_MEMORY:
            self._names.clear()
        name = metric_name(tag.decode("utf-8", "replace"))
        self._names[tag] = name
        return name

    def _error(self, kind: str, message: str, record_no: int) -> SourceError:
        origin = self._origin
        return SourceError(
            origin.run, origin.source, kind, message, f"{origin.location}:record {record_no}"
        )


def _plugin_of(metadata: bytes) -> tuple[bytes, int]:
    """(plugin name, data class) of a SummaryMetadata."""
    plugin = b""
    data_class = 0
    for number, wire, value in message_fields(metadata):
        if number == 1 and wire == 2:  # plugin_data
            for inner, inner_wire, name in message_fields(_message(value)):
                if inner == 1 and inner_wire == 2:
                    plugin = _message(name)
        elif number == 4 and wire == 0:
            assert isinstance(value, int)
            data_class = value
    return plugin, data_class


def tensor_scalar(tensor: bytes) -> float | None:
    """The value of a one-element numeric TensorProto; None for anything else."""
    dtype = 0
    elements = 1
    content: bytes | None = None
    typed: list[tuple[int, int, int | bytes]] = []
    for number, wire, value in message_fields(tensor):
        if number == 1 and wire == 0:
            assert isinstance(value, int)
            dtype = value
        elif number == 2 and wire == 2:
            elements = _element_count(_message(value))
        elif number == 4 and wire == 2:
            content = _message(value)
        else:
            typed.append((number, wire, value))
    layout = _DTYPES.get(dtype)
    if layout is None or elements != 1:
        return None
    form, field_number = layout
    if content:
        return _unpack_one(form, content)
    for number, wire, value in typed:
        if number == field_number:
            return _typed_value(form, wire, value)
    return None


def _element_count(shape: bytes) -> int:
    count = 1
    for number, wire, dim in message_fields(shape):
        if number == 2 and wire == 2:  # dim { size = 1 }
            size = 1
            for inner, inner_wire, value in message_fields(_message(dim)):
                if inner == 1 and inner_wire == 0:
                    assert isinstance(value, int)
                    size = value
            count *= size
    return count


def _unpack_one(form: str, content: bytes) -> float | None:
    if form == "bfloat16":
        return float(_FLOAT.unpack(b"\0\0" + content[:2])[0]) if len(content) == 2 else None
    unpacker = struct.Struct(form)
    if len(content) != unpacker.size:
        return None
    return float(unpacker.unpack(content)[0])


def _typed_value(form: str, wire: int, value: int | bytes) -> float | None:
    """The first element of a typed value field (packed or not)."""
    if form in ("<f", "<d"):
        raw = _message(value)
        size = 4 if form == "<f" else 8
        return float(struct.unpack_from(form, raw)[0]) if len(raw) >= size else None
    if wire == 2:  # packed varints: the first one
        first, _ = _varint(_message(value), 0)
    else:
        assert isinstance(value, int)
        first = value
    if form in ("<e", "bfloat16"):  # half_val holds the 16 bits in an int32
        bits = (first & 0xFFFF).to_bytes(2, "little")
        return _unpack_one(form, bits)
    if form in ("<i", "<h", "<b", "<q") and first >= 1 << 63:
        first -= 1 << 64  # a negative int32/int64 is written as a 64-bit two's complement
    return float(first)


def _bad_step(step: int) -> str:
    return (
        f"step {step:,} is outside 0..{MAX_SANE_STEP:,}, more optimizer steps than any "
        "fine-tuning run takes (or negative): not a step, so this event is skipped"
    )
