"""TensorBoard catch-up: a 1,000,000-scalar event file, tunewatch vs tensorboard's own loader.

The file is HF-Trainer-shaped: per step one event each for train/loss, train/grad_norm,
train/learning_rate and train/epoch (simple_value scalars), so 1M scalars are 250,000 steps.
Measured in the same run: tensorboard's EventFileLoader alone iterating the file (the
competitor: without TensorFlow it checks CRCs in Python and decodes with protobuf's C upb),
tunewatch's follower (TfRecordTailer + TensorBoardParser: framing, CRC checks, decoding,
points), tunewatch's framing with protobuf's decoder instead of the hand-written one (the
design not taken), and the daemon's whole catch-up (RunWatcher.catch_up with a real SQLite
store and a bus subscriber). Then what each reader costs a process to import (time, RSS).

    .venv/bin/python bench/tensorboard_catchup.py [--scalars N] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_description
from catchup_throughput import tunewatch_catch_up

from tunewatch.daemon.events import MetricsBatch, MetricsEvent
from tunewatch.daemon.memory import tune_malloc
from tunewatch.daemon.service import tune_gc
from tunewatch.daemon.sources.base import FileOrigin
from tunewatch.daemon.sources.tensorboard import TensorBoardParser
from tunewatch.daemon.sources.tfrecord import TfRecordTailer, frame_record, split_records
from tunewatch.daemon.store import FileState

TAGS = (b"train/loss", b"train/grad_norm", b"train/learning_rate", b"train/epoch")
CACHE = Path(__file__).resolve().parent.parent / "build" / "bench"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def scalar_event(step: int, wall_time: float, tag: bytes, value: float) -> bytes:
    """Event{wall_time, step, summary{value{tag, simple_value}}}, as SummaryWriter writes it."""
    summary_value = _field(1, tag) + b"\x15" + struct.pack("<f", value)
    return (
        b"\x09"
        + struct.pack("<d", wall_time)
        + b"\x10"
        + _varint(step)
        + _field(5, _field(1, summary_value))
    )


def event_file(scalars: int) -> Path:
    """A cached event file of `scalars` scalars (written once, a few seconds)."""
    path = CACHE / f"events.out.tfevents.{scalars}.bench"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    version = b"\x09" + struct.pack("<d", 1.7e9) + b"\x1a\x0dbrain.Event:2"
    parts = [frame_record(version)]
    for i in range(scalars):
        step, k = divmod(i, len(TAGS))
        value = (3.0 / (step + 1), 0.9, 1e-4, step / 1000)[k]
        parts.append(frame_record(scalar_event(step, 1.7e9 + step * 0.5, TAGS[k], value)))
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"".join(parts))
    tmp.replace(path)
    return path


def tensorboard_loader(path: Path) -> tuple[float, int]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader  # type: ignore[import-untyped]

    start = time.perf_counter()
    n = sum(len(event.summary.value) for event in EventFileLoader(str(path)).Load())
    return time.perf_counter() - start, n


def protobuf_decoder(path: Path) -> tuple[float, int]:
    """The road not taken: tunewatch's framing with protobuf's C (upb) decoder for the events."""
    from tensorboard.compat.proto.event_pb2 import Event  # type: ignore[import-untyped]

    start = time.perf_counter()
    n = 0
    with path.open("rb") as f:
        partial = b""
        while chunk := f.read(1 << 20):
            buf = partial + chunk
            framed = split_records(buf, 10 << 20)
            partial = buf[framed.consumed :]
            for record in framed.records:
                for value in Event.FromString(record).summary.value:
                    if value.HasField("simple_value"):
                        n += 1
    return time.perf_counter() - start, n


def _scalars(event: MetricsEvent) -> int:
    if isinstance(event, MetricsBatch):
        return len(event) * len(event.columns)
    return sum(len(p.metrics) for p in event.points())


def tunewatch_follower(path: Path) -> tuple[float, int]:
    origin = FileOrigin(run="bench", source=path.name, path=str(path))
    state = FileState(key=str(path), run_id=1, source="tensorboard")
    tailer = TfRecordTailer(origin, TensorBoardParser(origin), state, max_line_bytes=10 << 20)
    start = time.perf_counter()
    n = 0
    while (batch := tailer.read_now()) is not None:
        n += sum(_scalars(e) for e in batch.events if isinstance(e, MetricsEvent))
    elapsed = time.perf_counter() - start
    tailer.close_now()
    return elapsed, n


_IMPORT_PROBE = """
import sys, time
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
before = rss(); start = time.perf_counter()
for name in sys.argv[1:]:
    __import__(name)
print(f"{(time.perf_counter() - start) * 1000:.0f} {rss() - before:.1f}")
"""

IMPORTS = {
    "tunewatch's reader (tfrecord + tensorboard modules, google_crc32c)": [
        "tunewatch.daemon.sources.tfrecord",
        "tunewatch.daemon.sources.tensorboard",
    ],
    "tensorboard's EventFileLoader (protobuf, numpy, ...)": [
        "tensorboard.backend.event_processing.event_file_loader",
    ],
    "protobuf and tensorboard's Event message only": ["tensorboard.compat.proto.event_pb2"],
}


def import_cost(modules: list[str]) -> tuple[float, float]:
    """(ms, MiB RSS) to import `modules` on top of what every source imports (median of 5)."""
    # What every source needs already (the store, the events, the line tailer and parsers).
    base = [
        "tunewatch.daemon.store",
        "tunewatch.daemon.sources.tailer",
        "tunewatch.daemon.sources.jsonl",
    ]
    runs = []
    for _ in range(5):
        prelude = f"import {', '.join(base)}\n"
        out = subprocess.run(
            [sys.executable, "-c", prelude + _IMPORT_PROBE, *modules],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        runs.append((float(out[0]), float(out[1])))
    runs.sort()
    return runs[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scalars", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is reported")
    args = parser.parse_args()
    tune_malloc()
    print(f"machine: {machine_description()}")
    path = event_file(args.scalars)
    print(f"{args.scalars:,} scalars in {path.stat().st_size / 1e6:.0f} MB ({path})")
    theirs, n = min(tensorboard_loader(path) for _ in range(args.repeat))
    assert n == args.scalars, n
    tune_gc()
    print(
        f"tensorboard EventFileLoader (load only):    {n / theirs:>10,.0f} scalars/s"
        f"  ({theirs:.2f} s)"
    )
    ours, n = min(tunewatch_follower(path) for _ in range(args.repeat))
    assert n == args.scalars, n
    print(
        f"tunewatch follower (frame, CRC, decode):    {n / ours:>10,.0f} scalars/s"
        f"  ({ours:.2f} s)  ratio {theirs / ours:.2f}x"
    )
    upb, n = min(protobuf_decoder(path) for _ in range(args.repeat))
    assert n == args.scalars, n
    print(
        f"our framing + protobuf (upb) Event decode:  {n / upb:>10,.0f} scalars/s"
        f"  ({upb:.2f} s)  ratio {theirs / upb:.2f}x"
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run" / "runs" / "Dec01_host"
        run_dir.mkdir(parents=True)
        (run_dir / "events.out.tfevents.1.host.1.0").symlink_to(path)
        runs = [
            asyncio.run(tunewatch_catch_up(run_dir.parent.parent, Path(tmp) / f"s{i}", False))
            for i in range(args.repeat)
        ]
        whole, received, stored, _db_bytes = min(runs)
        # A step's events split by a read's end make two points of that step (other metrics).
        assert received == stored >= args.scalars // len(TAGS), (received, stored)
        print(
            f"tunewatch daemon catch-up (+ store, bus):   {args.scalars / whole:>10,.0f} scalars/s"
            f"  ({whole:.2f} s)  ratio {theirs / whole:.2f}x  ({stored:,} points stored)"
        )
    print("import on top of the other sources' modules (median of 5 fresh interpreters):")
    for label, modules in IMPORTS.items():
        ms, mib = import_cost(modules)
        print(f"  {label}: {ms:.0f} ms, +{mib:.1f} MiB RSS")


if __name__ == "__main__":
    main()
