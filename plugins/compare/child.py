"""The comparison process: `python -m tunewatch.plugins.compare.child --request R --out O`.

The daemon runs comparisons here, never in its own process (torch and a model or two would
stay in its memory for good); `tunewatch compare` calls `compare()` directly.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tunewatch.plugins.compare.recommend import with_verdict
from tunewatch.plugins.compare.request import ComparisonOutcome, ComparisonRequest
from tunewatch.plugins.compare.results import Comparison, ModelSide
from tunewatch.plugins.compare.snapshot_files import SnapshotRefused, inspect_snapshot
from tunewatch.plugins.compare.trainer_metrics import trainer_metrics
from tunewatch.plugins.compare.weights import RecommendWeights

Progress = Callable[[str, int, int], None]  # (what, done, total)


def compare(request: ComparisonRequest, progress: Progress | None = None) -> Comparison:
    """Measure both snapshots, add what their trainer logged, and judge the difference."""
    from tunewatch.plugins.compare.engine import compare_snapshots  # torch: only here

    measured = compare_snapshots(
        Path(request.a),
        Path(request.b),
        test_file=Path(request.test_file) if request.test_file else None,
        device=request.device,
        max_new_tokens=request.max_new_tokens,
        repeats=request.repeats,
        warmup=request.warmup,
        batch_size=request.batch_size,
        examples=request.examples,
        margin_bytes=request.gpu_margin_bytes,
        when_short=request.when_gpu_short,
        progress=progress,
    )
    measured = replace(
        measured, a=_with_trainer_metrics(measured.a), b=_with_trainer_metrics(measured.b)
    )
    return with_verdict(measured, RecommendWeights(**request.weights))


def _with_trainer_metrics(side: ModelSide) -> ModelSide:
    step, metrics = trainer_metrics(Path(side.path))
    if not metrics and step is None:
        return side
    return replace(
        side, trainer_metrics={**metrics, **side.trainer_metrics}, step=side.step or step
    )


def outcome(request: ComparisonRequest) -> ComparisonOutcome:
    """What the daemon gets back: the comparison, or why there is none."""
    try:
        # Refused before torch is even imported: a pickle-only or remote-code snapshot costs
        # nothing, and nothing of it is loaded.
        for path in (request.a, request.b):
            inspect_snapshot(Path(path))
        from tunewatch.plugins.compare.engine import DeviceBusy
    except SnapshotRefused as exc:
        return ComparisonOutcome("refused", str(exc))
    try:
        return ComparisonOutcome("ok", comparison=compare(request))
    except SnapshotRefused as exc:
        return ComparisonOutcome("refused", str(exc))
    except DeviceBusy as exc:
        return ComparisonOutcome("deferred", str(exc))
    except Exception as exc:  # reported to the daemon, which keeps running
        traceback.print_exc()
        return ComparisonOutcome("error", f"{type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunewatch.plugins.compare.child")
    parser.add_argument("--request", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    outcome(ComparisonRequest.read(args.request)).write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
