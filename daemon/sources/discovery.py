"""Which files inside a run directory are training artefacts, and of which kind.

Patterns are relative to the run directory and match part by part (`*` never crosses `/`), so
`*.jsonl` means top-level JSONL logs only. Folders tunewatch writes itself (inbox, reports,
snapshots) are never read as sources.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from tunewatch.daemon.config import Settings

CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"


class SourceKind(StrEnum):
    JSONL = "jsonl"
    TEXT = "text"
    CSV = "csv"
    STATUS = "status"
    TRAINER_STATE = "trainer_state"
    TENSORBOARD = "tensorboard"


@dataclass(frozen=True, slots=True)
class SourceRules:
    """The matching rules derived from settings, compiled once."""

    jsonl: tuple[str, ...]
    text: tuple[str, ...]
    csv: tuple[str, ...]
    status: tuple[str, ...]
    tensorboard: tuple[str, ...]
    trainer_state: bool
    excluded_dirs: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> SourceRules:
        s = settings.sources
        excluded = {
            p
            for p in (settings.paths.inbox, settings.paths.reports, settings.paths.snapshots)
            if not Path(p).is_absolute()
        }
        return cls(
            jsonl=s.jsonl_globs,
            text=s.text_globs,
            csv=s.csv_globs,
            status=s.status_files,
            tensorboard=s.tensorboard_globs,
            trainer_state=s.trainer_state,
            excluded_dirs=frozenset(PurePosixPath(p).parts[0] for p in excluded),
        )

    def classify(self, rel: PurePosixPath) -> SourceKind | None:
        """The kind of source at `rel` (relative to the run directory), or None to ignore it."""
        parts = rel.parts
        if not parts or parts[0] in self.excluded_dirs or any(p.startswith(".") for p in parts):
            return None
        if self.trainer_state and parts[-1] == TRAINER_STATE:
            if len(parts) == 1 or (len(parts) == 2 and CHECKPOINT_DIR.match(parts[0])):
                return SourceKind.TRAINER_STATE
            return None
        for kind, patterns in (
            (SourceKind.STATUS, self.status),
            (SourceKind.CSV, self.csv),
            (SourceKind.JSONL, self.jsonl),
            (SourceKind.TEXT, self.text),
            (SourceKind.TENSORBOARD, self.tensorboard),
        ):
            if any(_match_parts(parts, p) for p in patterns):
                return kind
        return None

    def may_matter(self, name: str) -> bool:
        """Cheap filter on a bare file name, applied to every inotify event."""
        if name == TRAINER_STATE:
            return self.trainer_state
        return any(fnmatchcase(name, p.rsplit("/", 1)[-1]) for p in self._patterns())

    def max_depth(self) -> int:
        return max([2, *(len(PurePosixPath(p).parts) for p in self._patterns())])

    def _patterns(self) -> tuple[str, ...]:
        return (*self.status, *self.csv, *self.jsonl, *self.text, *self.tensorboard)


def _match_parts(parts: tuple[str, ...], pattern: str) -> bool:
    pattern_parts = PurePosixPath(pattern).parts
    return len(pattern_parts) == len(parts) and all(
        fnmatchcase(part, pat) for part, pat in zip(parts, pattern_parts, strict=True)
    )


def scan_run(run_dir: Path, rules: SourceRules) -> Iterator[tuple[SourceKind, Path]]:
    """Every source file now in `run_dir`, not descending into weights or tunewatch's own dirs."""
    depth_limit = rules.max_depth()
    root_depth = len(run_dir.parts)
    for dirpath, dirnames, filenames in os.walk(run_dir):
        here = Path(dirpath)
        depth = len(here.parts) - root_depth
        rel_dir = PurePosixPath(*here.parts[root_depth:]) if depth else PurePosixPath()
        if depth + 1 >= depth_limit:
            dirnames.clear()
        else:
            dirnames[:] = [
                d
                for d in dirnames
                if not d.startswith(".") and not (depth == 0 and d in rules.excluded_dirs)
            ]
        for name in filenames:
            kind = rules.classify(rel_dir / name)
            if kind is not None:
                yield kind, here / name


def checkpoint_step(path: Path) -> int:
    """N for `.../checkpoint-N/trainer_state.json`; the run's final trainer_state sorts last."""
    match = CHECKPOINT_DIR.match(path.parent.name)
    return int(match.group(1)) if match else 1 << 62
