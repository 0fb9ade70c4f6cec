"""When a volume fills: from the checkpoints its training runs will save, and from how fast its
free space has been falling.

Two rules; the earlier forecast wins, and either one alerts (critical):
- checkpoints: each training run saves its newest checkpoint's size again every cadence (the
  median gap between its recent checkpoints), up to the end of the run (total steps known) and
  at least once. When the saves due within `horizon_s` (or the next one, with no cadence known
  yet) need more than is free, the volume fills at the first save that does not fit. A run
  whose trainer deletes old checkpoints (save_total_limit) needs room for one more only.
- rate: the least-squares slope of free bytes over the recent samples; the volume fills within
  `horizon_s` at that rate. This catches what is not a checkpoint (logs, caches, datasets).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tunewatch.daemon.history import fmt_duration
from tunewatch.plugins.resources.checkpoints import Cadence, Checkpoint
from tunewatch.plugins.resources.findings import Finding, fmt_bytes
from tunewatch.plugins.resources.forecast import seconds_until

# Saves of one run considered at most: checkpoints copied in one go have mtimes a few ms apart,
# a "cadence" that would otherwise list millions of saves.
MAX_SAVES = 1000


@dataclass(frozen=True, slots=True)
class RunSaves:
    """What one training run will still write on its volume."""

    run: str
    newest: Checkpoint
    size_bytes: int  # of one checkpoint
    cadence: Cadence
    remaining: int | None = None  # checkpoints before the run ends, when its total is known
    rotating: bool = False

    def due(self, now: float, horizon_s: float, most: int = MAX_SAVES) -> list[float]:
        """When its next saves are due within the horizon (at least the next one, at most
        `most`; an overdue save counts as due now)."""
        gap = self.cadence.seconds
        if gap is None or self.rotating:
            return [now if gap is None else max(now, self.newest.mtime + gap)]
        count = max(1, min(math.floor((now + horizon_s - self.newest.mtime) / gap), most))
        if self.remaining is not None:
            count = min(count, max(self.remaining, 1))
        return [max(now, self.newest.mtime + k * gap) for k in range(1, count + 1)]

    def next_name(self) -> str:
        if self.cadence.steps is None:
            return "its next checkpoint"
        return f"checkpoint-{self.newest.step + self.cadence.steps}"


def remaining_saves(
    newest_step: int, steps_between: int | None, total_steps: int | None
) -> int | None:
    """Checkpoints a run still saves before `total_steps` (its final save included), or None
    when its total or its save interval is not known."""
    if total_steps is None or steps_between is None or steps_between <= 0:
        return None
    return max(math.ceil((total_steps - newest_step) / steps_between), 1)


@dataclass(frozen=True, slots=True)
class DiskState:
    volume: str
    total_bytes: int
    free_bytes: int
    consumed_per_s: float | None  # how fast free space falls (least squares), if known
    window_s: float  # the samples `consumed_per_s` is taken over


def judge_disk(
    disk: DiskState, runs: Sequence[RunSaves], horizon_s: float, now: float
) -> Finding | None:
    """A critical finding when `disk` fills within `horizon_s` by either rule, else None."""
    by_checkpoints = _checkpoint_forecast(disk, runs, horizon_s, now)
    by_rate = seconds_until(0.0, float(disk.free_bytes), disk.consumed_per_s)
    if by_rate is not None and by_rate > horizon_s:
        by_rate = None
    if by_checkpoints is None and by_rate is None:
        return None
    used = 1.0 - disk.free_bytes / disk.total_bytes if disk.total_bytes > 0 else 1.0
    if by_checkpoints is not None and (by_rate is None or by_checkpoints[0] <= by_rate):
        summary = by_checkpoints[1]
    elif disk.consumed_per_s is None or disk.free_bytes <= 0:
        summary = f"{disk.volume} is full: nothing more can be written there"
    else:
        assert by_rate is not None
        summary = (
            f"{disk.volume} fills in {fmt_duration(by_rate)} at the rate it is filling "
            f"({fmt_bytes(disk.consumed_per_s * 3600)}/h over the last "
            f"{fmt_duration(disk.window_s)}): {fmt_bytes(disk.free_bytes)} free"
        )
    return Finding(
        resource="disk",
        severity="critical",
        summary=summary,
        advice="",  # the checkpoints that can go are named when the episode opens
        path=disk.volume,
        value=max(0.0, min(used, 1.0)),
    )


def _checkpoint_forecast(
    disk: DiskState, runs: Sequence[RunSaves], horizon_s: float, now: float
) -> tuple[float, str] | None:
    """(seconds until the first save that does not fit, what to say), or None if all fit."""
    # More saves of a run than fit in the free space plus one change nothing.
    saves = sorted(
        (when, i)
        for i, run in enumerate(runs)
        for when in run.due(
            now, horizon_s, min(disk.free_bytes // max(run.size_bytes, 1) + 1, MAX_SAVES)
        )
    )
    needed = 0
    for count, (when, i) in enumerate(saves, start=1):
        needed += runs[i].size_bytes
        if needed <= disk.free_bytes:
            continue
        eta = max(when - now, 0.0)
        free = fmt_bytes(disk.free_bytes)
        if count == 1:
            run = runs[i]
            due = f", due in {fmt_duration(eta)}" if run.cadence.seconds is not None else ""
            return eta, (
                f"{run.next_name()} of {run.run} ({fmt_bytes(run.size_bytes)}) will not fit: "
                f"{free} free on {disk.volume}{due}"
            )
        short = fmt_bytes(needed - disk.free_bytes)
        return eta, (
            f"{disk.volume} fills in {fmt_duration(eta)} at the rate checkpoints use it: the "
            f"{count} checkpoints due by then need {fmt_bytes(needed)}, {short} more than the "
            f"{free} free"
        )
    return None
