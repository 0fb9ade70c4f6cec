"""The manifest inside every snapshot: what it is, where it came from, its weights' sha256.

A folder counts as a tunewatch snapshot only if `read_manifest` accepts it; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeGuard

MANIFEST_NAME = "tunewatch-snapshot.json"
FORMAT = "tunewatch-snapshot"
VERSION = 1
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# A real manifest is a few kilobytes; anything far larger is not ours and is not parsed.
MAX_MANIFEST_BYTES = 16 * 2**20
HASH_CHUNK_BYTES = 4 * 2**20


@dataclass(frozen=True, slots=True)
class WeightFile:
    path: str  # relative to the snapshot, with `/` separators
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    run: str
    step: int
    metric: str
    value: float
    lower_is_better: bool
    created: float  # Unix time
    source: str
    files: tuple[str, ...]
    weights: tuple[WeightFile, ...]
    skipped: tuple[str, ...] = ()


def is_weight_file(path: str) -> bool:
    return path.lower().endswith(WEIGHT_SUFFIXES)


def sha256_of(path: Path) -> str:
    """The file's sha256, read in chunks so a 20 GB shard never sits in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def describe_weights(root: Path, files: Iterable[str]) -> tuple[WeightFile, ...]:
    return tuple(
        WeightFile(rel, (root / rel).stat().st_size, sha256_of(root / rel))
        for rel in sorted(files)
        if is_weight_file(rel)
    )


def to_json(manifest: Manifest) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "run": manifest.run,
        "step": manifest.step,
        "metric": manifest.metric,
        "value": manifest.value,
        "lower_is_better": manifest.lower_is_better,
        "created": datetime.fromtimestamp(manifest.created).astimezone().isoformat(),
        "created_unix": manifest.created,
        "source": manifest.source,
        "files": list(manifest.files),
        "weights": [{"path": w.path, "size": w.size, "sha256": w.sha256} for w in manifest.weights],
        "skipped": list(manifest.skipped),
    }


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Write the manifest and fsync it: it is what makes the folder recognisable after a crash."""
    path = directory / MANIFEST_NAME
    data = json.dumps(to_json(manifest), indent=2, allow_nan=False).encode() + b"\n"
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def read_manifest(directory: Path) -> Manifest | None:
    """The folder's manifest if it is a well-formed tunewatch manifest, else None."""
    path = directory / MANIFEST_NAME
    try:
        info = path.lstat()
    except OSError:
        return None
    if not path.is_file() or path.is_symlink() or info.st_size > MAX_MANIFEST_BYTES:
        return None
    try:
        raw = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return _parse(raw) if isinstance(raw, dict) else None


def _parse(raw: dict[str, Any]) -> Manifest | None:
    if raw.get("format") != FORMAT or raw.get("version") != VERSION:
        return None
    run, step, metric, value = raw.get("run"), raw.get("step"), raw.get("metric"), raw.get("value")
    lower, created, source = raw.get("lower_is_better"), raw.get("created_unix"), raw.get("source")
    if not (isinstance(run, str) and isinstance(metric, str) and isinstance(source, str)):
        return None
    if not isinstance(step, int) or isinstance(step, bool) or not isinstance(lower, bool):
        return None
    if not _is_number(value) or not _is_number(created):
        return None
    files = _strings(raw.get("files"))
    skipped = _strings(raw.get("skipped", []))
    weights = _weights(raw.get("weights"))
    if files is None or skipped is None or weights is None:
        return None
    return Manifest(
        run, step, metric, float(value), lower, float(created), source, files, weights, skipped
    )


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _strings(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return tuple(value)


def _weights(value: object) -> tuple[WeightFile, ...] | None:
    if not isinstance(value, list):
        return None
    weights: list[WeightFile] = []
    for item in value:
        if not isinstance(item, dict):
            return None
        path, size, sha = item.get("path"), item.get("size"), item.get("sha256")
        if not (isinstance(path, str) and isinstance(size, int) and isinstance(sha, str)):
            return None
        weights.append(WeightFile(path, size, sha))
    return tuple(weights)
