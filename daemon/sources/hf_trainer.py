"""Parser for Hugging Face Trainer `trainer_state.json` (in `checkpoint-N/` and the output dir).

Each checkpoint's `log_history` repeats every older entry; the cursor makes each entry come out
exactly once across all checkpoints of a run, in any order the files are read.

A run resumed from an earlier checkpoint logs those steps again, with other values. The cursor
keeps a short digest of the entries at each checkpoint's step: a document whose entries at its
own step differ from what was seen there is a new attempt, and its entries after the newest
checkpoint both attempts share come out again, as a new segment.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePath

from tunewatch.daemon.events import (
    CheckpointSaved,
    MetricsLogged,
    RunEvent,
    SourceError,
    StatusChanged,
)
from tunewatch.daemon.sources.base import FileOrigin, load_document, written_at
from tunewatch.daemon.sources.metric_names import (
    STEP_OUT_OF_RANGE,
    as_metric,
    as_step,
    out_of_range_step,
    split_step,
)
from tunewatch.daemon.text import storable_text

_CHECKPOINT_DIR = re.compile(r"checkpoint-\d+")
# Checkpoints whose digest the cursor keeps (a run is resumed from one of its recent ones).
MAX_DIGESTS = 64


@dataclass
class _Cursor:
    """What was already emitted: the persisted form is compact JSON of these fields."""

    step: int = -1  # the highest step emitted
    keys_at_step: list[str] = field(default_factory=list)  # key sets emitted at `step`
    checkpoint: int = -1  # the highest checkpoint step announced
    max_steps: int | None = None
    # log_history entries with an absurd step already reported: every checkpoint repeats them,
    # in the same order, so the first this many are not news.
    bad_steps: int = 0
    # Checkpoint step (as text, a JSON key) -> digest of the entries at that step.
    digests: dict[str, str] = field(default_factory=dict)
    written: float = 0.0  # mtime of the newest document that took `step` further

    @classmethod
    def load(cls, text: str | None) -> _Cursor:
        if text is None:
            return cls()
        try:
            raw = json.loads(text)
            cursor = cls(raw["step"], raw["keys"], raw["checkpoint"], raw["max_steps"])
            cursor.bad_steps = raw.get("bad_steps", 0)  # absent from older cursors
            cursor.digests = raw.get("digests", {})
            cursor.written = raw.get("written", 0.0)
        except (ValueError, KeyError, TypeError):
            return cls()
        return cursor if cursor.is_valid() else cls()

    def is_valid(self) -> bool:
        return (
            isinstance(self.step, int)
            and isinstance(self.checkpoint, int)
            and isinstance(self.keys_at_step, list)
            and all(isinstance(keys, str) for keys in self.keys_at_step)
            and (self.max_steps is None or isinstance(self.max_steps, int))
            and isinstance(self.bad_steps, int)
            and isinstance(self.digests, dict)
            and all(isinstance(v, str) for v in self.digests.values())
            and isinstance(self.written, int | float)
        )

    def remember(self, step: int, digest: str) -> None:
        self.digests[str(step)] = digest
        if len(self.digests) > MAX_DIGESTS:  # the oldest checkpoints are not resumed from
            for old in sorted(self.digests, key=int)[: len(self.digests) - MAX_DIGESTS]:
                del self.digests[old]

    def forget_after(self, step: int) -> None:
        """Drop what is known of checkpoints after `step`: that attempt was abandoned."""
        self.digests = {k: v for k, v in self.digests.items() if int(k) <= step}

    def dump(self) -> str:
        raw = {
            "step": self.step,
            "keys": self.keys_at_step,
            "checkpoint": self.checkpoint,
            "max_steps": self.max_steps,
            "bad_steps": self.bad_steps,
            "digests": self.digests,
            "written": self.written,
        }
        return json.dumps(raw, separators=(",", ":"))


def _entry_metrics(entry: dict[str, object]) -> tuple[int | None, dict[str, float]]:
    step, metrics = split_step(entry)
    # The end-of-training summary's `train_loss` is the run's average loss; kept as `loss` it
    # would be a bogus point at the last step of the loss curve (a fake spike or drop).
    if "train_runtime" in entry and "loss" in metrics and "loss" not in entry:
        metrics["train_loss"] = metrics.pop("loss")
    return step, metrics


def _step_of(entry: object) -> int | None:
    return as_step(entry.get("step")) if isinstance(entry, dict) else None


def _resumed(history: list[object], step: int, state: _Cursor, written: float | None) -> bool:
    """Whether a document that stops before the cursor's step is a new attempt, not merely an
    older checkpoint read late: its first entry at its own step differs from the one seen
    there, or, never seen there, it was written after the document that took the cursor on."""
    digest = _digest(history, step)
    if digest is None:
        return False  # nothing logged at its own step: no evidence either way
    seen = state.digests.get(str(step))
    if seen is not None:
        return seen != digest
    return written is not None and written > state.written


def _digest(history: list[object], step: int) -> str | None:
    """A short digest of the first log_history entry at `step` (another attempt logs other
    values there), or None when there is none."""
    entry = next((e for e in history if _step_of(e) == step), None)
    if entry is None:
        return None
    text = json.dumps(entry, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


class TrainerStateParser:
    """Turns a `trainer_state.json` into the metrics, checkpoint and progress not yet emitted."""

    def __init__(self, origin: FileOrigin) -> None:
        self._origin = origin
        parent = PurePath(origin.path).parent
        # Only files inside `checkpoint-N/` announce a checkpoint; the final copy in the output
        # dir describes the same steps without being one.
        self._checkpoint_dir = str(parent) if _CHECKPOINT_DIR.fullmatch(parent.name) else None

    def parse(
        self, data: bytes, cursor: str | None, *, written: float | None = None
    ) -> tuple[list[RunEvent], str | None]:
        document = load_document(data)
        history = document.get("log_history") if isinstance(document, dict) else None
        if not isinstance(document, dict) or not isinstance(history, list):
            return [self._unexpected_shape(document)], cursor
        state = _Cursor.load(cursor)
        now = written_at(written)
        events: list[RunEvent] = []
        global_step = as_step(document.get("global_step"))
        max_steps = as_step(document.get("max_steps"))
        if max_steps is not None and max_steps != state.max_steps:
            events.append(self._status(global_step, max_steps, now))
            state.max_steps = max_steps
        resumed = (
            global_step is not None
            and global_step < state.step
            and _resumed(history, global_step, state, written)
        )
        if resumed and global_step is not None:
            events.extend(self._resumed_entries(history, global_step, state, now))
        else:
            events.extend(self._new_entries(history, state, now))
        digest = None if global_step is None else _digest(history, global_step)
        if global_step is not None and digest is not None:
            state.remember(global_step, digest)
        if global_step is not None and global_step >= state.step and written is not None:
            state.written = max(state.written, written)
        if self._checkpoint_dir and global_step is not None and global_step > state.checkpoint:
            events.append(self._checkpoint(document, global_step, self._checkpoint_dir, now))
            state.checkpoint = global_step
        return events, state.dump()

    def _new_entries(self, history: list[object], state: _Cursor, now: float) -> list[RunEvent]:
        """Metrics of the entries after the cursor, and errors for entries with an absurd step
        not reported yet; advances the cursor past them."""
        origin = self._origin
        events: list[RunEvent] = []
        # Several entries share a step (train and eval logs); the cursor remembers which key
        # sets were emitted at its step, counted, so a repeat of the same kind is not lost.
        already = Counter(state.keys_at_step)
        bad_steps = 0
        for entry in history:
            if not isinstance(entry, dict):
                continue  # nothing to place it by; re-reporting it on every rewrite is noise
            step, metrics = _entry_metrics(entry)
            if step is None:
                out_of_range = out_of_range_step(entry)
                if out_of_range is not None:
                    bad_steps += 1
                    if bad_steps > state.bad_steps:  # not reported from an earlier checkpoint
                        events.append(self._error(STEP_OUT_OF_RANGE, out_of_range))
                        state.bad_steps = bad_steps
                continue
            if step < state.step:
                continue
            keys = json.dumps(sorted(entry))
            if step == state.step:
                if already[keys] > 0:
                    already[keys] -= 1
                    continue
            else:
                state.step, state.keys_at_step, already = step, [], Counter()
            state.keys_at_step.append(keys)
            if metrics:
                events.append(MetricsLogged(origin.run, step, metrics, origin.source, now))
        return events

    def _resumed_entries(
        self, history: list[object], global_step: int, state: _Cursor, now: float
    ) -> list[RunEvent]:
        """The entries of an attempt that went back in steps (resumed from a checkpoint),
        after the newest checkpoint it shares with what was read before."""
        shared = [
            int(step)
            for step, digest in state.digests.items()
            if int(step) < global_step and _digest(history, int(step)) == digest
        ]
        resumed_from = max(shared, default=-1)
        state.forget_after(resumed_from)
        state.step, state.keys_at_step = resumed_from, []
        state.checkpoint = min(state.checkpoint, resumed_from)  # its checkpoints are new
        later = [e for e in history if (_step_of(e) or 0) > resumed_from or _step_of(e) is None]
        return self._new_entries(later, state, now)

    def _status(self, global_step: int | None, max_steps: int, now: float) -> StatusChanged:
        origin = self._origin
        return StatusChanged(
            origin.run,
            "training",
            origin.source,
            step=global_step,
            total_steps=max_steps,
            time=now,
        )

    def _checkpoint(
        self, document: dict[str, object], step: int, path: str, now: float
    ) -> CheckpointSaved:
        best = document.get("best_model_checkpoint")
        return CheckpointSaved(
            self._origin.run,
            step,
            storable_text(path),  # shown and stored, never opened
            self._origin.source,
            best_metric=as_metric(document.get("best_metric")),
            best_checkpoint=storable_text(best) if isinstance(best, str) else None,
            time=now,
        )

    def _unexpected_shape(self, document: object) -> SourceError:
        if isinstance(document, dict) and "log_history" not in document:
            message = "no 'log_history' list: is this a Hugging Face trainer_state.json?"
        elif isinstance(document, dict):
            found = type(document["log_history"]).__name__
            message = f"'log_history' should be a list, found {found}"
        else:
            found = type(document).__name__
            message = f"trainer_state.json should hold a JSON object, found {found}"
        return self._error("unexpected_shape", message)

    def _error(self, kind: str, message: str) -> SourceError:
        origin = self._origin
        return SourceError(origin.run, origin.source, kind, message, origin.location)
