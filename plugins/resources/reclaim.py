"""Which checkpoints could go to make room, and the advice that names them.

tunewatch deletes nothing: it names the checkpoints that are neither a run's newest (the one a
resume needs) nor its best (the model it is training for), what deleting them gives back, and
the command, paths shell-quoted, for the person to run if they agree.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tunewatch.plugins.resources.checkpoints import Checkpoint, FolderSize
from tunewatch.plugins.resources.findings import fmt_bytes


@dataclass(frozen=True, slots=True)
class RunBest:
    """A run's current best model, as far as tunewatch knows: the step of its newest
    `best_model` event, and the checkpoint folders named best (by that event, and by the
    trainer's own `best_model_checkpoint`). Earlier bests are superseded; the snapshot
    plugin already copied them."""

    steps: frozenset[int] = frozenset()
    names: frozenset[str] = frozenset()  # e.g. "checkpoint-400"


@dataclass(frozen=True, slots=True)
class Reclaimable:
    run: str
    checkpoint: Checkpoint
    size: FolderSize


def reclaimable(
    runs: Sequence[tuple[str, tuple[Checkpoint, ...], RunBest]],
    size_of: Callable[[Checkpoint], FolderSize],
) -> list[Reclaimable]:
    """The checkpoints of (run, its checkpoints by step, its best) that are neither newest
    nor best, oldest first within each run."""
    found: list[Reclaimable] = []
    for run, checkpoints, best in runs:
        for checkpoint in checkpoints[:-1]:
            if checkpoint.step in best.steps or checkpoint.path.name in best.names:
                continue
            found.append(Reclaimable(run, checkpoint, size_of(checkpoint)))
    return found


def reclaim_advice(volume: str, candidates: Sequence[Reclaimable]) -> str:
    """What the person can do about a filling `volume`, naming what could go."""
    if not candidates:
        return (
            f"No checkpoint can go without losing a run's newest or best: free space elsewhere "
            f"on {volume}, or save less often (save_steps) or fewer (save_total_limit)."
        )
    freed = sum(c.size.freeable for c in candidates)
    shared = sum(c.size.bytes for c in candidates) - freed
    names = ", ".join(f"{c.run}/{c.checkpoint.path.name}" for c in candidates)
    command = "rm -r " + " ".join(shlex.quote(str(c.checkpoint.path)) for c in candidates)
    kept = (
        f" ({fmt_bytes(shared)} more is hard-linked elsewhere, e.g. into snapshots, and stays)"
        if shared > 0
        else ""
    )
    return (
        f"tunewatch deletes nothing: you decide. Neither their run's newest nor its best, "
        f"{len(candidates)} checkpoint{'s' if len(candidates) > 1 else ''} can go and free "
        f"{fmt_bytes(freed)}{kept}: {names}. To delete: {command}"
    )
