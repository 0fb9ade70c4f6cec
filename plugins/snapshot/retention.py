"""Which snapshots to keep (the K best of each run and metric) and the one guarded way to delete."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from tunewatch.plugins.snapshot.manifest import Manifest, read_manifest
from tunewatch.plugins.snapshot.staging import TMP_PREFIX, UnsafeRemoval, is_snapshot_name

# Metric names where a smaller value is the better model; anything else (accuracy, f1, bleu,
# reward...) is taken as higher-is-better, as the Hugging Face Trainer does for non-losses.
_LOWER_IS_BETTER = frozenset(
    {"loss", "perplexity", "ppl", "error", "err", "wer", "cer", "nll", "mse", "mae", "rmse"}
)


def lower_is_better(metric: str) -> bool:
    words = [w for w in re.split(r"[^a-z0-9]+", metric.lower()) if w]
    return any(w in _LOWER_IS_BETTER or w.endswith("loss") for w in words)


def list_snapshots(snapshots_dir: Path) -> list[tuple[Path, Manifest]]:
    """Every folder in `snapshots_dir` that is provably a tunewatch snapshot, with its manifest."""
    if not snapshots_dir.is_dir():
        return []
    found: list[tuple[Path, Manifest]] = []
    for entry in os.scandir(snapshots_dir):
        path = Path(entry.path)
        manifest = _own_snapshot(path)
        if manifest is not None:
            found.append((path, manifest))
    return found


def _own_snapshot(path: Path) -> Manifest | None:
    if path.name.startswith(TMP_PREFIX) or path.is_symlink() or not path.is_dir():
        return None
    manifest = read_manifest(path)
    if manifest is None or not is_snapshot_name(path.name, manifest.run, manifest.step):
        return None
    return manifest


def to_prune(snapshots: Sequence[tuple[Path, Manifest]], keep: int) -> list[Path]:
    """The snapshots beyond the `keep` best of each (run, metric); `keep` 0 keeps them all."""
    if keep <= 0:
        return []
    groups: dict[tuple[str, str], list[tuple[Path, Manifest]]] = {}
    for path, manifest in snapshots:
        groups.setdefault((manifest.run, manifest.metric), []).append((path, manifest))
    doomed: list[Path] = []
    for members in groups.values():
        members.sort(key=lambda pm: _rank(pm[1]))
        doomed.extend(path for path, _ in members[keep:])
    return doomed


def _rank(manifest: Manifest) -> tuple[float, int]:
    # Best first; among equal values the later step (trained longer) wins.
    value = manifest.value if manifest.lower_is_better else -manifest.value
    return value, -manifest.step


# Deleting is the only destructive thing tunewatch does, so a folder is removed only if it is a
# direct child of the snapshots folder, not a symlink, named like a snapshot, and holds a valid
# manifest that agrees with its name. A user's own folder never passes all of these.
def remove_snapshot(snapshots_dir: Path, path: Path) -> None:
    """Delete one snapshot folder after checking, again, that it is one. Raises UnsafeRemoval."""
    root = snapshots_dir.resolve(strict=True)
    if path.is_symlink():
        raise UnsafeRemoval(f"{path} is a symlink; not deleting")
    target = path.resolve(strict=True)
    if target.parent != root:
        raise UnsafeRemoval(f"{target} is not directly inside {root}; not deleting")
    if _own_snapshot(target) is None:
        raise UnsafeRemoval(f"{target} has no valid tunewatch manifest; not deleting")
    shutil.rmtree(target)


def prune(snapshots_dir: Path, run: str, metric: str, keep: int) -> list[Path]:
    """Apply retention to one run's snapshots for one metric; returns the deleted folders."""
    mine = [
        (path, manifest)
        for path, manifest in list_snapshots(snapshots_dir)
        if manifest.run == run and manifest.metric == metric
    ]
    doomed = to_prune(mine, keep)
    for path in doomed:
        remove_snapshot(snapshots_dir, path)
    return doomed
