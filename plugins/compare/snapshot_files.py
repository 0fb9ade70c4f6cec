"""What a snapshot directory holds, judged from file names, sizes and JSON only (no torch).

A snapshot is refused here, before anything is loaded, when loading it could run code: pickle
weights are never opened (only stat'ed) and configs that ask for remote code are never followed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewatch.plugins.compare.results import SnapshotKind

CONFIG = "config.json"
ADAPTER_CONFIG = "adapter_config.json"
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
ADAPTER_SAFE_WEIGHTS = "adapter_model.safetensors"
# Pickle files transformers and PEFT write; listed so the refusal can name what it found.
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
TRAINER_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth")
_CHECKPOINT_NAME = re.compile(r"checkpoint-\d+")

_CONVERT_MODEL = (
    'python -c "from transformers import AutoModelForCausalLM as M; '
    "M.from_pretrained('{dir}').save_pretrained('{dir}', safe_serialization=True)\""
)
_CONVERT_ADAPTER = (
    'python -c "from peft import AutoPeftModelForCausalLM as M; '
    "M.from_pretrained('{dir}').save_pretrained('{dir}', safe_serialization=True)\""
)


class SnapshotRefused(Exception):
    """The snapshot cannot be compared; the message says why and what to do about it."""


@dataclass(frozen=True, slots=True)
class SnapshotFiles:
    """The files of one snapshot that a comparison loads, and its size on disk."""

    path: Path
    kind: SnapshotKind
    config_path: Path  # config.json, or adapter_config.json for an adapter
    weight_files: tuple[Path, ...]  # *.safetensors only
    weights_bytes: int  # the weight files above
    dir_bytes: int  # every file below `path`
    tokenizer_dir: Path | None  # where the tokenizer files are (may be the parent or the base)
    base: SnapshotFiles | None = None  # the base model of an adapter

    @property
    def base_model_path(self) -> Path | None:
        return None if self.base is None else self.base.path

    @property
    def label(self) -> str:
        """What a person calls this snapshot: its directory name ("checkpoint-600")."""
        return self.path.name


def inspect_snapshot(path: Path) -> SnapshotFiles:
    """Classify `path` and list its safetensors weights, or raise SnapshotRefused saying why."""
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise SnapshotRefused(f"{path}: not a directory; pass a save_pretrained or checkpoint dir")
    if (path / ADAPTER_CONFIG).is_file():
        return _inspect_adapter(path)
    config_path = path / CONFIG
    if not config_path.is_file():
        raise SnapshotRefused(_missing_config_message(path))
    _refuse_remote_code(config_path, _read_json(config_path))
    weights = _weight_files(path, _CONVERT_MODEL)
    kind: SnapshotKind = "checkpoint" if _is_trainer_checkpoint(path) else "model"
    return _snapshot(path, kind, config_path, weights, _tokenizer_dir(path, kind))


def _inspect_adapter(path: Path) -> SnapshotFiles:
    config_path = path / ADAPTER_CONFIG
    config = _read_json(config_path)
    weights = _weight_files(path, _CONVERT_ADAPTER)
    base_name = config.get("base_model_name_or_path")
    base_path = Path(str(base_name)).expanduser() if base_name else None
    if base_path is None or not base_path.is_dir():
        raise SnapshotRefused(
            f"{config_path}: base_model_name_or_path is {base_name!r}, not a local directory; "
            "tunewatch never downloads models. Download the base model, then set "
            "base_model_name_or_path in adapter_config.json to its directory"
        )
    try:
        base = inspect_snapshot(base_path)
    except SnapshotRefused as exc:
        raise SnapshotRefused(f"the base model of adapter {path}: {exc}") from exc
    if base.kind == "peft_adapter":
        raise SnapshotRefused(
            f"{config_path}: the base model {base.path} is itself an adapter; "
            "merge it first (merge_and_unload) and point base_model_name_or_path at the result"
        )
    tokenizer_dir = path if _has_tokenizer(path) else base.tokenizer_dir
    return _snapshot(path, "peft_adapter", config_path, weights, tokenizer_dir, base)


def _snapshot(
    path: Path,
    kind: SnapshotKind,
    config_path: Path,
    weights: tuple[Path, ...],
    tokenizer_dir: Path | None,
    base: SnapshotFiles | None = None,
) -> SnapshotFiles:
    return SnapshotFiles(
        path=path,
        kind=kind,
        config_path=config_path,
        weight_files=weights,
        weights_bytes=sum(w.stat().st_size for w in weights),
        dir_bytes=_dir_bytes(path),
        tokenizer_dir=tokenizer_dir,
        base=base,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotRefused(f"{path}: unreadable ({exc}); re-save the snapshot") from exc
    if not isinstance(data, dict):
        raise SnapshotRefused(f"{path}: not a JSON object; re-save the snapshot")
    return data


def _refuse_remote_code(config_path: Path, config: dict[str, Any]) -> None:
    """Refuse a config whose model (or tokenizer) classes live in Python files of the repo."""
    if "auto_map" not in config:
        return
    raise SnapshotRefused(
        f"{config_path}: 'auto_map' asks for custom model code from the snapshot, and tunewatch "
        "never enables trust_remote_code (that code would run with your permissions). Compare "
        "a model whose architecture transformers ships, or convert this one to such an "
        "architecture yourself after reviewing its code"
    )


def _weight_files(path: Path, convert: str) -> tuple[Path, ...]:
    """The safetensors weights of `path`, or a refusal naming the pickle files found instead."""
    if (path / ADAPTER_CONFIG).is_file():
        names = [ADAPTER_SAFE_WEIGHTS]
    elif (path / SAFE_INDEX).is_file():
        names = _shard_names(path / SAFE_INDEX)
    else:
        names = [SAFE_WEIGHTS]
    weights = tuple(path / name for name in names)
    missing = [w.name for w in weights if not w.is_file()]
    if not missing:
        return weights
    pickles = sorted(p.name for p in path.iterdir() if p.name in PICKLE_WEIGHTS)
    if pickles:
        raise SnapshotRefused(
            f"{path}: only pickle weights ({', '.join(pickles)}); tunewatch does not load them "
            "because unpickling runs whatever code the file contains. If you trust this "
            "checkpoint, convert it to safetensors once: " + convert.format(dir=path)
        )
    raise SnapshotRefused(
        f"{path}: weight file(s) missing: {', '.join(missing)}; the snapshot is incomplete "
        "(still being written, or the save failed): wait for it or save it again"
    )


def _shard_names(index_path: Path) -> list[str]:
    weight_map = _read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise SnapshotRefused(f"{index_path}: no weight_map; re-save the snapshot")
    return sorted({str(name) for name in weight_map.values()})


def _is_trainer_checkpoint(path: Path) -> bool:
    if _CHECKPOINT_NAME.fullmatch(path.name):
        return True
    return any((path / name).exists() for name in TRAINER_FILES)


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES)


def _tokenizer_dir(path: Path, kind: SnapshotKind) -> Path | None:
    """The snapshot's own tokenizer, else (for a Trainer checkpoint) the run directory's."""
    for candidate in (path, path.parent) if kind == "checkpoint" else (path,):
        if _has_tokenizer(candidate):
            tokenizer_config = candidate / "tokenizer_config.json"
            if tokenizer_config.is_file():
                _refuse_remote_code(tokenizer_config, _read_json(tokenizer_config))
            return candidate
    return None


def _missing_config_message(path: Path) -> str:
    checkpoints = sorted(
        (p for p in path.iterdir() if p.is_dir() and _CHECKPOINT_NAME.fullmatch(p.name)),
        key=lambda p: int(p.name.split("-")[1]),
    )
    if checkpoints:
        return (
            f"{path}: no {CONFIG}; this looks like a run directory, pass one of its "
            f"checkpoints instead (e.g. {checkpoints[-1]})"
        )
    return (
        f"{path}: no {CONFIG} or {ADAPTER_CONFIG}; pass a directory written by "
        "save_pretrained, a Trainer checkpoint-N directory or a PEFT adapter directory"
    )


def _dir_bytes(path: Path) -> int:
    # stat only: pickle files (optimizer.pt, training_args.bin, ...) count but are never opened.
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
