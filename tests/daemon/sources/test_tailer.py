"""LogTailer: appends, partial lines, rotation, truncation, oversized lines, resuming."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tunewatch.daemon.events import MetricsEvent, RunEvent, SourceError
from tunewatch.daemon.sources.base import FileOrigin
from tunewatch.daemon.sources.jsonl import JsonlParser
from tunewatch.daemon.sources.tailer import LogTailer
from tunewatch.daemon.store import FileState


def make_tailer(
    path: Path, state: FileState | None = None, max_line_bytes: int = 1 << 20
) -> LogTailer:
    origin = FileOrigin(run="run", source=path.name, path=str(path))
    state = state or FileState(key=str(path), run_id=1, source="jsonl")
    return LogTailer(origin, JsonlParser(origin), state, max_line_bytes=max_line_bytes)


async def read_all(tailer: LogTailer) -> list[RunEvent]:
    events: list[RunEvent] = []
    while (batch := await tailer.read()) is not None:
        events.extend(batch.events)
    return events


def steps(events: list[RunEvent]) -> list[int]:
    return [p.step for e in events if isinstance(e, MetricsEvent) for p in e.points()]


def line(step: int) -> str:
    return f'{{"step": {step}, "loss": {1.0 / (step + 1)}}}\n'


def append(path: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    with path.open("ab") as f:
        f.write(data)


async def test_reads_appended_lines_in_order(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    append(log, line(1) + line(2))
    tailer = make_tailer(log)
    assert steps(await read_all(tailer)) == [1, 2]
    append(log, line(3))
    assert steps(await read_all(tailer)) == [3]
    assert await tailer.read() is None
    await tailer.close()


async def test_a_line_without_its_newline_is_held_until_completed(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    full = line(7)
    append(log, line(6) + full[:10])
    tailer = make_tailer(log)
    assert steps(await read_all(tailer)) == [6]
    assert tailer.state.offset == len(line(6))  # the committed position excludes the fragment
    append(log, full[10:])
    assert steps(await read_all(tailer)) == [7]
    await tailer.close()


async def test_a_missing_file_yields_nothing_until_it_appears(tmp_path: Path) -> None:
    log = tmp_path / "later.jsonl"
    tailer = make_tailer(log)
    assert await tailer.read() is None
    append(log, line(1))
    assert steps(await read_all(tailer)) == [1]
    await tailer.close()


async def test_restart_resumes_after_the_committed_position(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    append(log, line(1) + line(2))
    first = make_tailer(log)
    assert steps(await read_all(first)) == [1, 2]
    committed = first.state
    await first.close()
    append(log, line(3))
    second = make_tailer(log, committed)
    assert steps(await read_all(second)) == [3]
    await second.close()


async def test_a_file_replaced_while_stopped_is_read_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    append(log, line(1) + line(2))
    first = make_tailer(log)
    await read_all(first)
    committed = first.state
    await first.close()
    log.unlink()
    append(log, line(10) + line(11) + line(12))  # a new run reusing the file name
    second = make_tailer(log, committed)
    assert steps(await read_all(second)) == [10, 11, 12]
    await second.close()


async def test_rotation_drains_the_old_file_then_follows_the_new_one(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    append(log, line(1))
    tailer = make_tailer(log)
    assert steps(await read_all(tailer)) == [1]
    append(log, line(2))  # written just before the rotation, not read yet
    os.rename(log, tmp_path / "train.jsonl.1")
    append(log, line(3))
    assert steps(await read_all(tailer)) == [2, 3]
    await tailer.close()


async def test_copytruncate_restarts_from_the_top(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    append(log, line(1) + line(2) + line(3))
    tailer = make_tailer(log)
    await read_all(tailer)
    log.write_bytes(b"")  # logrotate copytruncate
    append(log, line(4))
    assert steps(await read_all(tailer)) == [4]
    await tailer.close()


async def test_an_oversized_line_is_reported_and_skipped(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    append(log, line(1) + "x" * 5000 + "\n" + line(2))
    tailer = make_tailer(log, max_line_bytes=1000)
    events = await read_all(tailer)
    assert steps(events) == [1, 2]
    errors = [e for e in events if isinstance(e, SourceError)]
    assert [e.kind for e in errors] == ["line_too_long"]
    assert errors[0].location == f"{log}:2"
    assert tailer.state.errors == 1
    await tailer.close()


async def test_an_oversized_line_still_being_written_is_skipped_to_its_end(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    append(log, line(1) + "y" * 3000)
    tailer = make_tailer(log, max_line_bytes=1000)
    events = await read_all(tailer)
    assert steps(events) == [1]
    assert [e.kind for e in events if isinstance(e, SourceError)] == ["line_too_long"]
    append(log, "y" * 3000 + "\n" + line(2))
    assert steps(await read_all(tailer)) == [2]
    await tailer.close()


async def test_bad_bytes_and_malformed_json_are_counted_not_fatal(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    append(
        log,
        line(1).encode() + b'{"step": 2, "loss": "\xff\xfe"}\n' + b"{not json\n" + line(3).encode(),
    )
    tailer = make_tailer(log)
    events = await read_all(tailer)
    assert steps(events) == [1, 3]
    kinds = sorted(e.kind for e in events if isinstance(e, SourceError))
    assert kinds == ["invalid_json", "invalid_utf8"]
    assert tailer.state.errors == 2
    await tailer.close()


async def test_windows_line_endings_are_accepted(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    append(log, line(1).replace("\n", "\r\n") + line(2).replace("\n", "\r\n"))
    tailer = make_tailer(log)
    events = await read_all(tailer)
    assert steps(events) == [1, 2]
    assert tailer.state.offset == log.stat().st_size
    await tailer.close()


async def test_large_files_are_read_in_bounded_batches(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    append(log, "".join(line(i) for i in range(50_000)))
    tailer = make_tailer(log)
    batches = 0
    seen: list[int] = []
    while (batch := await tailer.read(max_bytes=64 * 1024)) is not None:
        batches += 1
        seen.extend(steps(batch.events))
    assert seen == list(range(50_000))
    assert batches > 10
    await tailer.close()


@st.composite
def appends_and_reads(draw: st.DrawFn) -> tuple[bytes, list[int], list[int]]:
    """A log (some lines CRLF, some oversized) cut into appends, and the read sizes to use."""
    content = b""
    for step in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["lf", "crlf", "long"]))
        if kind == "long":
            content += b"x" * draw(st.integers(101, 300)) + b"\n"
        else:
            content += line(step).encode().replace(b"\n", b"\r\n" if kind == "crlf" else b"\n")
    cuts = sorted(draw(st.lists(st.integers(0, len(content)), max_size=6)))
    reads = draw(st.lists(st.integers(1, 120), min_size=1, max_size=5))
    return content, cuts, reads


@given(appends_and_reads())
@settings(max_examples=60)
async def test_any_way_of_appending_and_reading_yields_each_line_once(
    case: tuple[bytes, list[int], list[int]],
) -> None:
    content, cuts, reads = case
    expected = [
        int(raw.split(b":")[1].split(b",")[0])
        for raw in content.splitlines()
        if raw.startswith(b"{")
    ]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "train.jsonl"
        log.write_bytes(b"")
        tailer = make_tailer(log, max_line_bytes=100)
        seen: list[int] = []
        last = 0
        for i, cut in enumerate([*cuts, len(content)]):
            append(log, content[last:cut])
            last = cut
            while (batch := await tailer.read(max_bytes=reads[i % len(reads)])) is not None:
                seen.extend(steps(batch.events))
        await tailer.close()
    assert seen == expected
    assert tailer.state.offset == len(content)
