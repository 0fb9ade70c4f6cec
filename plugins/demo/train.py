"""The demo's training run: `python -m tunewatch.plugins.demo.train RUN_DIR`.

A random tiny Llama with a tokenizer trained on the spot learns a toy corpus with a real
`transformers.Trainer` on CPU, slowed to about a minute so a person can watch it; at
`BLOW_UP_STEP` its learning rate is multiplied by 1000 (no gradient clipping), so the run really
diverges.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from tunewatch.plugins.demo.tiny_run import LrBlowUpCallback, train_tiny_run

STEPS = 120
SAVE_EVERY = 20
BLOW_UP_STEP = 85
STEP_PAUSE_S = 0.35  # ~45 s of training: time to watch the curve move


class Pace(TrainerCallback):
    """Slows each step down to a pace a person can follow."""

    def __init__(self, pause_s: float) -> None:
        self.pause_s = pause_s

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        time.sleep(self.pause_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunewatch.plugins.demo.train")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--pace-s", type=float, default=STEP_PAUSE_S)
    args = parser.parse_args(argv)
    train_tiny_run(
        args.run_dir,
        max_steps=STEPS,
        save_steps=SAVE_EVERY,
        eval_steps=SAVE_EVERY,
        max_grad_norm=0.0,
        callbacks=[LrBlowUpCallback(at_step=BLOW_UP_STEP, factor=1000.0), Pace(args.pace_s)],
        write_status_file=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
