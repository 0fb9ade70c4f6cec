"""The followers of one run directory: a tailer per log file, a follower per rewritten document."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tunewatch.daemon.config import Settings
from tunewatch.daemon.sources.base import FileOrigin, LineParser, WrittenClock
from tunewatch.daemon.sources.discovery import TRAINER_STATE, SourceKind, SourceRules
from tunewatch.daemon.sources.document import DocumentFollower
from tunewatch.daemon.sources.file_access import FileSignature
from tunewatch.daemon.sources.hf_trainer import TrainerStateParser
from tunewatch.daemon.sources.jsonl import JsonlParser
from tunewatch.daemon.sources.lightning_csv import LightningCsvParser
from tunewatch.daemon.sources.status_file import StatusFileParser
from tunewatch.daemon.sources.tailer import LogTailer
from tunewatch.daemon.sources.text_regex import PRESETS, TextLogParser, TextPattern
from tunewatch.daemon.store import FileState
from tunewatch.daemon.text import storable_text

Follower = LogTailer | DocumentFollower


@dataclass
class RunSources:
    """Everything followed inside one run directory, and how lively the run is."""

    run_id: int
    name: str
    path: Path
    followers: dict[str, Follower] = field(default_factory=dict)
    # Files read to their end and let go (no descriptor, no follower), with their signature
    # then: while it is unchanged there is nothing to read.
    resting: dict[Path, FileSignature] = field(default_factory=dict)
    last_change: float = 0.0  # unix time (mtime) of the newest data read from the run
    finished: bool = False  # its status is one of FINISHED_STATUSES (see run_progress)
    status_is_ours: bool = False  # that status is the one tunewatch inferred (run_progress)
    logging_after_finish: bool = False  # points came live after its finished status
    total_steps: int | None = None
    last_scan: float = -math.inf  # monotonic time of the last full scan of the directory

    def active(self, now: float, window_s: float) -> bool:
        """Training, as far as anyone can tell: not finished, and written within `window_s`."""
        done = self.finished and not self.logging_after_finish
        return not done and now - self.last_change < window_s

    def relative(self, path: Path) -> PurePosixPath | None:
        try:
            return PurePosixPath(path.relative_to(self.path).as_posix())
        except ValueError:
            return None

    def follower_key(self, kind: SourceKind, path: Path) -> str:
        # Every trainer_state.json of a run (one per checkpoint) feeds one logical document, so
        # that each log_history entry is emitted once across checkpoints.
        if kind is SourceKind.TRAINER_STATE:
            return storable_text(str(self.path / "**" / TRAINER_STATE))
        return storable_text(str(path))


def make_follower(
    run: RunSources, kind: SourceKind, path: Path, state: FileState | None, settings: Settings
) -> Follower:
    key = run.follower_key(kind, path)
    state = state or FileState(key=key, run_id=run.run_id, source=kind.value)
    rel = run.relative(path)
    source = str(rel) if rel is not None else path.name
    if kind is SourceKind.TRAINER_STATE:
        return DocumentFollower(run.name, TRAINER_STATE, TrainerStateParser, state)
    if kind is SourceKind.STATUS:
        return DocumentFollower(run.name, source, StatusFileParser, state)
    origin = FileOrigin(run=run.name, source=source, path=str(path))
    clock = WrittenClock()  # the tailer sets the file's mtime on it at every read
    max_bytes = settings.sources.max_line_bytes
    if kind is SourceKind.TENSORBOARD:  # records instead of lines; a record bounded the same
        # Imported on the first event file: the reader and its CRC32C library cost the daemon
        # about 1.5 MB of RSS, which runs without TensorBoard logs need not pay.
        from tunewatch.daemon.sources.tensorboard import TensorBoardParser
        from tunewatch.daemon.sources.tfrecord import TfRecordTailer

        tb_parser = TensorBoardParser(origin, clock=clock)
        return TfRecordTailer(origin, tb_parser, state, max_line_bytes=max_bytes, clock=clock)
    parser: LineParser
    if kind is SourceKind.JSONL:
        parser = JsonlParser(origin, clock=clock)
    elif kind is SourceKind.CSV:
        parser = LightningCsvParser(origin, clock=clock)
    else:
        parser = TextLogParser(origin, text_pattern(settings), clock=clock)
    return LogTailer(origin, parser, state, max_line_bytes=max_bytes, clock=clock)


def text_pattern(settings: Settings) -> TextPattern:
    if settings.sources.text_regex:
        return TextPattern.from_regex(settings.sources.text_regex)
    return PRESETS[settings.sources.text_preset]


__all__ = ["Follower", "RunSources", "SourceRules", "make_follower"]
