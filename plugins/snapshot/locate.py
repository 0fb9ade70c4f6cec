"""Find the folder holding a step's weights (the event's path, `checkpoint-N/` or `model_dir`),
or say why there is none yet, or will never be one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")
# The Hugging Face Trainer writes this last into a checkpoint: its presence means "saved".
TRAINER_STATE = "trainer_state.json"

Kind = Literal["checkpoint", "named", "model_dir"]


@dataclass(frozen=True, slots=True)
class Located:
    path: Path
    kind: Kind

    @property
    def required_file(self) -> str | None:
        return TRAINER_STATE if self.kind == "checkpoint" else None


@dataclass(frozen=True, slots=True)
class Pending:
    """Nothing to copy yet, but it may still appear."""

    reason: str


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Nothing to copy, and waiting will not change that."""

    reason: str


def checkpoint_step(name: str) -> int | None:
    match = CHECKPOINT_DIR.fullmatch(name)
    return int(match.group(1)) if match else None


def checkpoints(run_dir: Path) -> dict[int, Path]:
    """The run's `checkpoint-N/` folders by step (symlinked ones are not followed)."""
    found: dict[int, Path] = {}
    try:
        entries = list(os.scandir(run_dir))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        step = checkpoint_step(entry.name)
        if step is not None and entry.is_dir(follow_symlinks=False):
            found[step] = Path(entry.path)
    return found


def locate(
    run_dir: Path, step: int, named: str | None, model_dir: str
) -> Located | Pending | Unavailable:
    """Where the weights of `step` are; the path an event names is preferred when it exists."""
    if named:
        found = _named(run_dir, step, named)
        if found is not None:
            return found
    by_step = checkpoints(run_dir)
    if step in by_step:
        return Located(by_step[step], "checkpoint")
    if model_dir:
        weights = run_dir / model_dir
        if weights.is_dir():
            return Located(weights, "model_dir")
        return Pending(f"model_dir {weights} does not exist yet")
    later = sorted(s for s in by_step if s > step)
    if later:
        return Unavailable(
            f"there is no checkpoint-{step} and the run has since saved checkpoint-{later[0]}: "
            f"step {step} was not saved (save_steps not aligned with eval_steps?) "
            "or was already deleted (save_total_limit)"
        )
    return Pending(f"no checkpoint-{step} in {run_dir} yet{_found(by_step)}")


def _named(run_dir: Path, step: int, named: str) -> Located | Pending | Unavailable | None:
    """The event's own path, if it settles the question; None to look in the run dir."""
    path = Path(named).expanduser()
    path = path if path.is_absolute() else run_dir / path
    named_step = checkpoint_step(path.name)
    if named_step is not None and named_step != step:
        return Unavailable(
            f"the event names {path}, a checkpoint of step {named_step}, for a best at step {step}"
        )
    if path.is_dir():
        return Located(path, "checkpoint" if named_step is not None else "named")
    if named_step is not None:
        # Trainers record this path relative to their own working directory, which need not
        # be the run dir: look for the same checkpoint name in the run dir instead.
        return None
    return Pending(f"{path}, named by the event, does not exist yet")


def _found(by_step: dict[int, Path]) -> str:
    if not by_step:
        return ""
    names = ", ".join(f"checkpoint-{s}" for s in sorted(by_step))
    return f" (found: {names})"
