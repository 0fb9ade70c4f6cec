"""The eval metrics a Trainer logged at a snapshot's step, read from its trainer_state.json.

Without a test file these are the only quality figures a comparison has; they are shown
labelled as the trainer's, not measured by the comparison.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# A trainer_state.json of a long run holds every log line; larger than this it is not read.
MAX_STATE_BYTES = 64 << 20


def trainer_metrics(snapshot: Path) -> tuple[int | None, dict[str, float]]:
    """(the checkpoint's step, its `eval_*` metrics at that step), or (None, {}) when the
    snapshot carries no readable trainer_state.json."""
    path = snapshot / "trainer_state.json"
    try:
        if not path.is_file() or path.stat().st_size > MAX_STATE_BYTES:
            return None, {}
        state: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, {}
    if not isinstance(state, dict):
        return None, {}
    step = state.get("global_step")
    step = step if isinstance(step, int) and not isinstance(step, bool) else None
    history = state.get("log_history")
    metrics: dict[str, float] = {}
    for entry in history if isinstance(history, list) else ():
        if not isinstance(entry, dict) or (step is not None and entry.get("step") != step):
            continue
        for key, value in entry.items():
            if (
                isinstance(key, str)
                and key.startswith("eval_")
                and isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                metrics[key] = float(value)
    return step, metrics
