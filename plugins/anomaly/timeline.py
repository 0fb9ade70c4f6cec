"""Which logged values are new to the detectors: a run's steps are data, not trust.

A value often arrives twice: a status file repeats the trainer's log, and trainer_state.json
replays a checkpoint's history that the log already gave. A run's steps also go back: a resume
from a checkpoint writes its steps again, and a source that once wrote a bogus huge step goes
on with normal ones. `StepTimeline` tells the two apart by where each source has been.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tunewatch.plugins.anomaly.base import Point

# Judged steps remembered exactly per metric. A source may run this many steps ahead of another
# (a status file ahead of a buffered log) and the other's values in between are still judged;
# anything older counts as judged (a checkpoint's history replayed long after the log gave it).
RECENT_STEPS = 256


@dataclass(slots=True)
class _JudgedSteps:
    """The steps of one metric judged in the current segment: the newest exactly, older ones
    as a floor, so a single bogus huge step hides nothing below it."""

    floor: int = -1  # every step up to here counts as judged
    steps: list[int] = field(default_factory=list)  # judged steps above the floor, ascending

    def add(self, step: int) -> bool:
        """Mark `step` judged; False when it already was."""
        steps = self.steps
        if step <= self.floor:
            return False
        if not steps or step > steps[-1]:
            steps.append(step)  # the usual case: the next step of the run
        else:
            i = bisect_left(steps, step)
            if i < len(steps) and steps[i] == step:
                return False
            steps.insert(i, step)
        if len(steps) > RECENT_STEPS:
            self.floor = steps.pop(0)
        return True

    def forget_from(self, step: int) -> None:
        """Steps from `step` on are new again: a new segment starts there."""
        del self.steps[bisect_left(self.steps, step) :]
        self.floor = min(self.floor, step - 1)


@dataclass(slots=True)
class _SourcePosition:
    step: int  # the newest step this source gave
    segment: int  # the run's segment when it gave it


class StepTimeline:
    """The run's segments: each value is judged once per segment, whichever source gives it.

    Within a segment a value whose step was judged for its metric is a copy (another source gave
    it, or a replay of older history) and is not judged again. A source whose step goes back
    below its own newest starts a new segment in which everything from that step on is new,
    unless another source went back since this one last spoke: then this one is following the
    segment already opened (a resume seen first in the status file, then in the log), and what
    it gives below that segment's first step is taken as history.
    """

    def __init__(self) -> None:
        self.segment = 0
        self.judged: dict[str, _JudgedSteps] = {}
        self.sources: dict[str, _SourcePosition] = {}

    def fresh(self, source: str, point: Point) -> Point | None:
        """The point without the values already judged in this segment; None when none is left."""
        self._follow(source, point.step)
        fresh: dict[str, float] = {}
        for name, value in point.metrics.items():
            judged = self.judged.get(name)
            if judged is None:
                judged = self.judged[name] = _JudgedSteps()
            if judged.add(point.step):
                fresh[name] = value
        if not fresh:
            return None
        if len(fresh) == len(point.metrics):
            return point
        return Point(point.step, fresh, point.time)

    def _follow(self, source: str, step: int) -> None:
        position = self.sources.get(source)
        if position is None:
            self.sources[source] = _SourcePosition(step, self.segment)
            return
        if step < position.step and position.segment == self.segment:
            self.segment += 1
            for judged in self.judged.values():
                judged.forget_from(step)
        position.step = step
        position.segment = self.segment

    def state(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "judged": {name: [j.floor, j.steps] for name, j in self.judged.items()},
            "sources": {name: [p.step, p.segment] for name, p in self.sources.items()},
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from `state()`; raises KeyError, TypeError or ValueError for a damaged one."""
        segment = int(state["segment"])
        judged = {
            str(name): _JudgedSteps(int(floor), sorted(int(s) for s in steps))
            for name, (floor, steps) in state["judged"].items()
        }
        sources = {
            str(name): _SourcePosition(int(step), int(seg))
            for name, (step, seg) in state["sources"].items()
        }
        self.segment, self.judged, self.sources = segment, judged, sources
