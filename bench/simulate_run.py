"""Simulates a fine-tuning run on disk: LLaMA-Factory-style trainer_log.jsonl plus a status file.

Used by `make demo` (a live run to watch) and by the benchmarks (large logs written at once).
The loss curve is realistic enough to look at: warm-up, exponential decay, batch noise, an eval
every `--eval-every` steps.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import time
from pathlib import Path


def loss_at(step: int, total: int, rng: random.Random, noise: float = 0.04) -> float:
    warm = min(1.0, step / max(total * 0.03, 1))
    base = 0.7 + 1.8 * math.exp(-4.0 * step / total)
    return (base + (1 - warm) * 0.5) * (1 + rng.gauss(0, noise))


def log_line(step: int, total: int, loss: float, started: float) -> str:
    lr = 5e-5 * min(1.0, step / max(total * 0.03, 1)) * (1 - step / (total + 1))
    elapsed = int(time.time() - started)
    return json.dumps(
        {
            "current_steps": step,
            "total_steps": total,
            "loss": round(loss, 4),
            "lr": lr,
            "epoch": round(3.0 * step / total, 4),
            "percentage": round(100.0 * step / total, 2),
            "elapsed_time": f"{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}",
            "remaining_time": "0:00:00",
        }
    )


def write_status(run_dir: Path, status: str, step: int, total: int, loss: float) -> None:
    path = run_dir / "training_status.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps(
            {
                "status": status,
                "current_step": step,
                "total_steps": total,
                "loss": round(loss, 4),
                "pid": os.getpid(),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
        )
    )
    os.replace(tmp, path)


def write_bulk(path: Path, lines: int, seed: int = 0) -> None:
    """Write `lines` LLaMA-Factory-style lines at once (for the catch-up benchmark)."""
    rng = random.Random(seed)
    started = time.time()
    with path.open("w") as f:
        for step in range(1, lines + 1):
            f.write(log_line(step, lines, loss_at(step, lines, rng), started) + "\n")


def simulate(run_dir: Path, steps: int, interval_s: float, eval_every: int, seed: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    started = time.time()
    log = run_dir / "trainer_log.jsonl"
    with log.open("a", buffering=1) as f:
        for step in range(1, steps + 1):
            loss = loss_at(step, steps, rng)
            f.write(log_line(step, steps, loss, started) + "\n")
            if step % eval_every == 0:
                eval_loss = loss_at(step, steps, rng, noise=0.01) + 0.05
                f.write(
                    json.dumps({"current_steps": step, "eval_loss": round(eval_loss, 4)}) + "\n"
                )
            if step % 10 == 0 or step == steps:
                write_status(
                    run_dir, "training" if step < steps else "completed", step, steps, loss
                )
            time.sleep(interval_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between steps")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        simulate(args.run_dir, args.steps, args.interval, args.eval_every, args.seed)


if __name__ == "__main__":
    main()
