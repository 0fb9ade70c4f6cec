"""One run's detector state and where its judging stands, in memory and as saved in plugin_state.

Each run is saved under two keys: `run:<name>`, the whole state (detectors, timeline, cursor,
stall), and `pos:<name>`, only its cursor, whether a stall alert is active and whether its end
is judged. The small ones are read all at once at start, so that only the runs with points after
their cursor, or an end to judge, are loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tunewatch.plugins.anomaly.config import AnomalyConfig
from tunewatch.plugins.anomaly.gate import RunDetectors
from tunewatch.plugins.anomaly.timeline import StepTimeline

STATE_PREFIX = "run:"
POSITION_PREFIX = "pos:"


@dataclass
class RunTracking:
    detectors: RunDetectors
    cursor: int = 0  # seq of the last point fed to the detectors
    dirty: bool = False
    stall: tuple[str, int] | None = None  # (metric, step) of an active stall alert
    last_train_best_time: float = 0.0
    # False while the run's end, when it comes, is to be judged: its detectors could tell
    # something then (`RunDetectors.end_may_tell`). True once judged, or with nothing to judge;
    # a state saved before ends were judged counts as judged, so an upgrade judges no old run.
    ended: bool = True
    # Which values are new: copies from a second source are judged once, a resume again.
    timeline: StepTimeline = field(default_factory=StepTimeline)

    def state_json(self) -> str:
        return json.dumps(
            {
                "cursor": self.cursor,
                "detectors": self.detectors.state(),
                "stall": list(self.stall) if self.stall else None,
                "last_train_best_time": self.last_train_best_time,
                "ended": self.ended,
                "timeline": self.timeline.state(),
            }
        )

    def position(self) -> SavedPosition:
        return SavedPosition(self.cursor, self.stall is not None, self.ended)


def restore_tracking(config: AnomalyConfig, saved: str) -> RunTracking:
    """The tracking saved as `state_json()`; raises ValueError, KeyError or TypeError for a
    damaged state."""
    data: dict[str, Any] = json.loads(saved)
    tracking = RunTracking(RunDetectors(config))
    tracking.detectors.restore(data["detectors"])
    tracking.cursor = int(data["cursor"])
    stall = data.get("stall")
    tracking.stall = (str(stall[0]), int(stall[1])) if stall else None
    tracking.last_train_best_time = float(data.get("last_train_best_time", 0.0))
    tracking.ended = bool(data.get("ended", True))
    # A state saved before segments kept only a newest step per metric, which may be the very
    # bogus step that hid every later value: it is not trusted, and the timeline starts afresh
    # at the saved cursor.
    if "timeline" in data:
        tracking.timeline.restore(data["timeline"])
    return tracking


def saved_cursor(saved: str) -> int:
    """The cursor of a state too damaged to restore, so history is not replayed into alerts."""
    try:
        return int(json.loads(saved).get("cursor", 0))
    except (ValueError, AttributeError, TypeError):
        return 0


@dataclass(frozen=True, slots=True)
class SavedPosition:
    """What `pos:<run>` holds. It is written after `run:<run>`, so it may lag behind the state
    (a run replayed for nothing) but is never ahead of it (points skipped)."""

    cursor: int
    stalled: bool
    ended: bool = True

    def to_json(self) -> str:
        return json.dumps({"cursor": self.cursor, "stalled": self.stalled, "ended": self.ended})

    @staticmethod
    def parse(text: str) -> SavedPosition | None:
        """None for a damaged position: the run is then loaded the way old states are."""
        try:
            data = json.loads(text)
            return SavedPosition(
                int(data["cursor"]), bool(data["stalled"]), bool(data.get("ended", True))
            )
        except (ValueError, KeyError, TypeError):
            return None
