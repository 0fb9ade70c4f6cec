"""The report's recommendations: rules that turn what was found into something a person can do,
naming the paths and the command."""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tunewatch.daemon.history import fmt_step, fmt_value
from tunewatch.plugins.report.model import (
    Activity,
    Checkpoint,
    Recommendation,
    RunStorage,
    Volume,
)

# Above this, a volume holding runs is worth freeing before a checkpoint fails to save.
DISK_FULL_FRACTION = 0.85
GIB = 2**30


@dataclass(frozen=True, slots=True)
class Rollback:
    """Where a broken run can go back to: the last snapshot before the damage."""

    run: str
    broken_at_step: int
    snapshot: str | None
    snapshot_step: int | None
    learning_rate: float | None  # what the run used at the snapshot's step (or just before)


@dataclass(frozen=True, slots=True)
class Silence:
    """Where a stalled run's metrics stopped."""

    run: str
    file: str
    time: float
    step: int


def last_snapshot_before(snapshots: dict[int, str], step: int) -> tuple[int, str] | None:
    """The newest snapshot taken of a step before `step` that is still on disk (else the
    newest of them, gone or not: its name still says which step to go back to)."""
    before = sorted(((s, p) for s, p in snapshots.items() if s < step), reverse=True)
    present = [(s, p) for s, p in before if Path(p).is_dir()]
    chosen = present or before
    return chosen[0] if chosen else None


def recommend(
    volumes: Sequence[Volume],
    storage: Sequence[RunStorage],
    activity: Activity,
    rollbacks: Sequence[Rollback],
    silences: Sequence[Silence],
) -> list[Recommendation]:
    out: list[Recommendation] = []
    out += [_free_disk(v, storage) for v in volumes if v.used_fraction > DISK_FULL_FRACTION]
    out += [_rollback(r) for r in rollbacks]
    out += [_stalled(s) for s in silences]
    out += [
        Recommendation(
            run=v.run,
            title=f"Fix the data before training on {v.path}",
            detail=f"it scored {v.score}/100 ({v.verdict}); the report says what to fix: "
            f"{v.report_path or 'run `tunewatch validate` on it'}",
            command=None if v.report_path is None else f"less -- {shlex.quote(v.report_path)}",
        )
        for v in activity.validations
        if not v.passed
    ]
    # Each new best is compared with the previous one: only a run's latest verdict says what
    # to deploy (the earlier winners were beaten since).
    latest = {c.run: c for c in activity.comparisons if c.winner is not None and not c.failed}
    out += [
        Recommendation(
            run=c.run,
            title=f"Deploy {c.winner}",
            detail=f"{c.summary}. Report: {c.report_path or '-'}",
            command=None,
        )
        for c in latest.values()
    ]
    return out


def removable(storage: Sequence[RunStorage], runs: Sequence[str]) -> list[Checkpoint]:
    """Checkpoints of `runs` that can go: not the newest of a run (a resume needs it), not the
    best; snapshots are never proposed (they are what a person relies on)."""
    wanted = set(runs)
    return [
        c for s in storage if s.run in wanted for c in s.checkpoints if not c.newest and not c.best
    ]


def _free_disk(volume: Volume, storage: Sequence[RunStorage]) -> Recommendation:
    free_gib = volume.free_bytes / GIB
    usage = f"{volume.mount} is {volume.used_fraction:.0%} full ({free_gib:.1f} GiB free)"
    doomed = removable(storage, volume.runs)
    if not doomed:
        return Recommendation(
            run=None,
            title=f"Free space on {volume.mount}",
            detail=f"{usage}; no checkpoint of a run there can go safely (each is the newest "
            "or the best): move finished runs elsewhere",
            command=None,
        )
    frees = sum(c.freeable_bytes for c in doomed)
    return Recommendation(
        run=None,
        title=f"Free space on {volume.mount}",
        detail=f"{usage}; {len(doomed)} checkpoint(s) are neither the newest nor the best of "
        f"their run; deleting them frees {frees / GIB:.2f} GiB (files shared with snapshots "
        "stay)",
        command="rm -rf -- " + " ".join(shlex.quote(c.path) for c in doomed),
    )


def _rollback(r: Rollback) -> Recommendation:
    if r.snapshot is None or r.snapshot_step is None:
        return Recommendation(
            run=r.run,
            title=f"{r.run} diverged at step {fmt_step(r.broken_at_step)}",
            detail="no snapshot was taken before it: restart from the last checkpoint before "
            "that step with a lower learning rate",
            command=None,
        )
    lr = ""
    if r.learning_rate is not None:
        lr = (
            f" (it was {fmt_value(r.learning_rate)} at step {fmt_step(r.snapshot_step)}; "
            f"try {fmt_value(r.learning_rate / 2)} or less)"
        )
    return Recommendation(
        run=r.run,
        title=f"Roll {r.run} back to {r.snapshot}",
        detail=f"it diverged at step {fmt_step(r.broken_at_step)}; the snapshot of step "
        f"{fmt_step(r.snapshot_step)} was taken before that. Resume from it with a lower "
        f"learning rate{lr}",
        command=f"trainer.train(resume_from_checkpoint={r.snapshot!r})",
    )


def _stalled(s: Silence) -> Recommendation:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.time))
    readable = Path(s.file).is_file()
    return Recommendation(
        run=s.run,
        title=f"{s.run} stalled at step {fmt_step(s.step)}",
        detail=f"its metrics stopped at {when} in {s.file}: check that the trainer is alive "
        "and read the end of its log",
        command=f"tail -n 50 -- {shlex.quote(s.file)}" if readable else None,
    )
