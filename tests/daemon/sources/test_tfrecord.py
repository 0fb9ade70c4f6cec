"""TFRecord framing and TfRecordTailer: records held until complete, damage skipped, resume."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader  # type: ignore[import-untyped]
from tensorboard.compat.proto import event_pb2, summary_pb2  # type: ignore[import-untyped]

from tunewatch.daemon.events import MetricsEvent, RunEvent, SourceError
from tunewatch.daemon.sources.base import FileOrigin
from tunewatch.daemon.sources.tensorboard import TensorBoardParser
from tunewatch.daemon.sources.tfrecord import (
    HEADER_BYTES,
    TfRecordTailer,
    frame_record,
    split_records,
)
from tunewatch.daemon.store import FileState


def scalar_event(step: int, loss: float) -> bytes:
    value = summary_pb2.Summary.Value(tag="train/loss", simple_value=loss)
    event = event_pb2.Event(
        wall_time=1.7e9 + step, step=step, summary=summary_pb2.Summary(value=[value])
    )
    return bytes(event.SerializeToString())


def records(steps: range) -> bytes:
    return b"".join(frame_record(scalar_event(s, 1.0 / (s + 1))) for s in steps)


_OPEN: list[TfRecordTailer] = []


@pytest.fixture(autouse=True)
def _close_tailers() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close_now()


def make_tailer(
    path: Path, state: FileState | None = None, max_record_bytes: int = 1 << 20
) -> TfRecordTailer:
    origin = FileOrigin(run="run", source=path.name, path=str(path))
    state = state or FileState(key=str(path), run_id=1, source="tensorboard")
    tailer = TfRecordTailer(
        origin, TensorBoardParser(origin), state, max_line_bytes=max_record_bytes
    )
    _OPEN.append(tailer)
    return tailer


def read_all(tailer: TfRecordTailer, max_bytes: int = 1 << 20) -> list[RunEvent]:
    events: list[RunEvent] = []
    while (batch := tailer.read_now(max_bytes)) is not None:
        events.extend(batch.events)
    return events


def steps(events: list[RunEvent]) -> list[int]:
    return [p.step for e in events if isinstance(e, MetricsEvent) for p in e.points()]


def errors(events: list[RunEvent]) -> list[str]:
    return [e.kind for e in events if isinstance(e, SourceError)]


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def test_records_of_a_real_event_file_are_those_tensorboard_reads(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as writer:
        for step in range(50):
            writer.add_scalar("train/loss", 2.0 / (step + 1), step)
        writer.add_text("note", "a text summary", 3)
    path = next(tmp_path.glob("events.out.tfevents.*"))
    framed = split_records(path.read_bytes(), 1 << 20)
    oracle = [e.SerializeToString() for e in LegacyEventFileLoader(str(path)).Load()]
    assert framed.damage == []
    assert framed.consumed == path.stat().st_size
    assert framed.records == oracle


def test_a_record_cut_at_any_byte_is_held_then_read_exactly_once(tmp_path: Path) -> None:
    head = records(range(3))
    last = frame_record(scalar_event(3, 0.25))
    for cut in range(len(last)):
        path = tmp_path / f"events.out.tfevents.cut{cut}"
        path.write_bytes(head + last[:cut])
        tailer = make_tailer(path)
        first = read_all(tailer)
        assert steps(first) == [0, 1, 2] and errors(first) == []
        assert tailer.state.offset == len(head)  # the committed position ends a whole record
        append(path, last[cut:])
        rest = read_all(tailer)
        assert steps(rest) == [3] and errors(rest) == []
        assert tailer.state.offset == len(head) + len(last)
        tailer.close_now()


def test_a_damaged_record_is_reported_and_the_rest_read(tmp_path: Path) -> None:
    data = bytearray(records(range(10)))
    third = len(records(range(2)))
    data[third + HEADER_BYTES + 3] ^= 0xFF  # a byte of record 3's data
    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(bytes(data))
    events = read_all(make_tailer(path))
    assert errors(events) == ["record_crc_mismatch"]
    assert steps(events) == [0, 1, 3, 4, 5, 6, 7, 8, 9]


def test_a_damaged_length_loses_one_record_and_reading_resyncs(tmp_path: Path) -> None:
    data = bytearray(records(range(10)))
    fifth = len(records(range(4)))
    data[fifth + 2] ^= 0x40  # the length of record 5: its framing is lost
    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(bytes(data))
    tailer = make_tailer(path)
    events = read_all(tailer)
    assert errors(events) == ["framing_lost"]
    assert steps(events) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert tailer.state.offset == len(data) and tailer.state.errors == 1


def test_a_restart_resumes_after_the_committed_record(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(records(range(40)))
    tailer = make_tailer(path)
    seen: list[int] = []
    for _ in range(3):  # chunks of 100 bytes end mid-record
        batch = tailer.read_now(100)
        assert batch is not None
        seen += steps(batch.events)
    committed = tailer.state
    tailer.close_now()
    append(path, records(range(40, 45)))
    resumed = make_tailer(path, committed)  # a new process with the stored position
    seen += steps(read_all(resumed, 100))
    assert seen == list(range(45))


def test_a_replaced_file_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(records(range(5)))
    tailer = make_tailer(path)
    assert steps(read_all(tailer)) == [0, 1, 2, 3, 4]
    replacement = tmp_path / "new"
    replacement.write_bytes(records(range(100, 103)))
    os.replace(replacement, path)
    tailer.close_now()
    assert steps(read_all(make_tailer(path, tailer.state))) == [100, 101, 102]


def test_a_truncated_file_is_read_again_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(records(range(10)))
    tailer = make_tailer(path)
    assert steps(read_all(tailer)) == list(range(10))
    with path.open("r+b") as f:  # the same file, cut and written anew
        f.truncate(0)
        f.write(records(range(50, 53)))
    assert steps(read_all(tailer)) == [50, 51, 52]


def test_an_oversized_record_is_skipped_unread_even_while_being_written(tmp_path: Path) -> None:
    big = frame_record(b"\x00" * 5000)  # an image, say: never a scalar
    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(records(range(2)) + big[:3000])
    tailer = make_tailer(path, max_record_bytes=1000)
    assert steps(read_all(tailer, 512)) == [0, 1]
    append(path, big[3000:] + records(range(2, 4)))
    events = read_all(tailer, 512)
    assert steps(events) == [2, 3] and errors(events) == []


@pytest.mark.parametrize("max_bytes", [7, 64, 1 << 20])
def test_chunk_size_changes_nothing(tmp_path: Path, max_bytes: int) -> None:
    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(records(range(30)))
    assert steps(read_all(make_tailer(path), max_bytes)) == list(range(30))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=0, max_value=700))
def test_framing_never_raises_on_arbitrary_bytes(data: bytes, limit: int) -> None:
    framed = split_records(data, limit)
    assert 0 <= framed.consumed <= len(data)
    assert all(len(r) <= limit for r in framed.records)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=12), st.binary(max_size=40))
def test_framed_payloads_come_back_and_a_damaged_tail_never_adds_one(
    payloads: list[bytes], tail: bytes
) -> None:
    data = b"".join(map(frame_record, payloads))
    assert split_records(data, 1 << 20).records == payloads
    assert split_records(data + tail, 1 << 20).records[: len(payloads)] == payloads
