"""Specification of inspect_snapshot: what a snapshot holds, and what is refused before loading."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.tiny_models import (
    TinySnapshots,
    arm_trainer_pickles,
    make_pickle_only_snapshot,
    make_remote_code_snapshot,
    write_malicious_pickle,
)

from tunewatch.plugins.compare.snapshot_files import SnapshotRefused, inspect_snapshot

PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


def _fake_model(directory: Path, weights: dict[str, int] | None = None) -> Path:
    """A save_pretrained-shaped directory; inspect_snapshot reads names and sizes, not tensors."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "llama"}))
    for name, size in ({"model.safetensors": 1000} if weights is None else weights).items():
        (directory / name).write_bytes(b"\0" * size)
    return directory


def _fake_adapter(directory: Path, base: str, weights: str = "adapter_model.safetensors") -> Path:
    directory.mkdir(parents=True)
    config = {"peft_type": "LORA", "base_model_name_or_path": base}
    (directory / "adapter_config.json").write_text(json.dumps(config))
    (directory / weights).write_bytes(b"\0" * 100)
    return directory


def test_a_trainer_checkpoint_lists_only_its_safetensors_weights(
    tiny_snapshots: TinySnapshots,
) -> None:
    files = inspect_snapshot(tiny_snapshots.early_checkpoint)

    assert files.kind == "checkpoint"
    assert files.label == "checkpoint-100"
    assert files.weight_files == (tiny_snapshots.early_checkpoint / "model.safetensors",)
    assert files.weights_bytes == files.weight_files[0].stat().st_size
    # The optimizer state and the other trainer files count on disk, not as weights.
    optimizer_bytes = (tiny_snapshots.early_checkpoint / "optimizer.pt").stat().st_size
    assert files.dir_bytes >= files.weights_bytes + optimizer_bytes
    assert files.tokenizer_dir == tiny_snapshots.early_checkpoint
    assert files.base_model_path is None


def test_a_save_pretrained_directory_is_a_model(tiny_snapshots: TinySnapshots) -> None:
    files = inspect_snapshot(tiny_snapshots.final_model)

    assert files.kind == "model"
    assert files.config_path == tiny_snapshots.final_model / "config.json"


def test_a_checkpoint_without_a_tokenizer_uses_the_run_directorys(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{}")
    checkpoint = _fake_model(tmp_path / "checkpoint-20")

    assert inspect_snapshot(checkpoint).tokenizer_dir == tmp_path


def test_a_model_without_a_tokenizer_says_so_with_none(tmp_path: Path) -> None:
    assert inspect_snapshot(_fake_model(tmp_path / "model")).tokenizer_dir is None


def test_sharded_weights_are_read_from_the_index(tmp_path: Path) -> None:
    shards = {"model-00001-of-00002.safetensors": 300, "model-00002-of-00002.safetensors": 200}
    model = _fake_model(tmp_path / "model", shards)
    index = {"weight_map": {"a.weight": next(iter(shards)), "b.weight": list(shards)[1]}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))

    files = inspect_snapshot(model)

    assert [w.name for w in files.weight_files] == sorted(shards)
    assert files.weights_bytes == 500


def test_a_missing_shard_is_an_incomplete_snapshot(tmp_path: Path) -> None:
    model = _fake_model(tmp_path / "model", {"model-00001-of-00002.safetensors": 300})
    index = {
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002.safetensors"}
    }
    (model / "model.safetensors.index.json").write_text(json.dumps(index))

    with pytest.raises(SnapshotRefused, match=r"missing: model-00002\.safetensors.*incomplete"):
        inspect_snapshot(model)


def test_a_lora_adapter_names_its_local_base_model(
    lora_adapter: Path, tiny_snapshots: TinySnapshots
) -> None:
    files = inspect_snapshot(lora_adapter)

    assert files.kind == "peft_adapter"
    assert files.config_path == lora_adapter / "adapter_config.json"
    assert files.weight_files == (lora_adapter / "adapter_model.safetensors",)
    assert files.base_model_path == tiny_snapshots.final_model
    assert files.tokenizer_dir == tiny_snapshots.final_model  # the adapter saved none


def test_an_adapter_whose_base_is_a_hub_name_is_refused(tmp_path: Path) -> None:
    adapter = _fake_adapter(tmp_path / "adapter", "meta-llama/Llama-3.2-1B")

    with pytest.raises(SnapshotRefused, match="not a local directory") as refused:
        inspect_snapshot(adapter)
    assert "base_model_name_or_path" in str(refused.value)  # what to edit


def test_an_adapter_whose_base_is_refused_is_refused_saying_so(tmp_path: Path) -> None:
    base = _fake_model(tmp_path / "base", {"pytorch_model.bin": 10})
    adapter = _fake_adapter(tmp_path / "adapter", str(base))

    with pytest.raises(SnapshotRefused, match=r"the base model of adapter .*only pickle weights"):
        inspect_snapshot(adapter)


def test_a_pickle_only_adapter_is_refused_with_the_peft_conversion(tmp_path: Path) -> None:
    base = _fake_model(tmp_path / "base")
    adapter = _fake_adapter(tmp_path / "adapter", str(base), weights="adapter_model.bin")

    with pytest.raises(SnapshotRefused, match="AutoPeftModelForCausalLM"):
        inspect_snapshot(adapter)


def test_the_malicious_pickle_fixture_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    # Without this, the refusal test below could pass with a harmless pickle.
    path = write_malicious_pickle(tmp_path / "pytorch_model.bin", tmp_path / "marker")

    pickle.loads(path.read_bytes())

    assert (tmp_path / "marker").exists()


def test_pickle_only_weights_are_refused_unopened_saying_why_and_how_to_convert(
    tiny_snapshots: TinySnapshots, tmp_path: Path, opened_files: list[str]
) -> None:
    marker = tmp_path / "marker"
    snapshot = make_pickle_only_snapshot(tiny_snapshots.final_model, tmp_path / "m", marker)
    opened_files.clear()  # writing it does not count

    with pytest.raises(SnapshotRefused) as refused:
        inspect_snapshot(snapshot)

    message = str(refused.value)
    assert "pytorch_model.bin" in message
    assert "runs whatever code" in message  # why
    assert f"save_pretrained('{snapshot}', safe_serialization=True)" in message  # how
    assert "trust" in message
    assert not marker.exists()
    assert not [p for p in opened_files if p.endswith("pytorch_model.bin")]


def test_trainer_pickles_are_never_opened(
    tiny_snapshots: TinySnapshots, tmp_path: Path, opened_files: list[str]
) -> None:
    checkpoint = tmp_path / "checkpoint-100"
    shutil.copytree(tiny_snapshots.early_checkpoint, checkpoint)
    arm_trainer_pickles(checkpoint, tmp_path / "marker")
    opened_files.clear()

    files = inspect_snapshot(checkpoint)

    assert files.kind == "checkpoint"
    assert not [p for p in opened_files if p.endswith(PICKLE_SUFFIXES)]
    assert not (tmp_path / "marker").exists()


def test_a_config_asking_for_remote_code_is_refused(
    tiny_snapshots: TinySnapshots, tmp_path: Path
) -> None:
    snapshot = make_remote_code_snapshot(tiny_snapshots.final_model, tmp_path / "custom")

    with pytest.raises(SnapshotRefused, match=r"auto_map.*trust_remote_code"):
        inspect_snapshot(snapshot)


def test_a_tokenizer_asking_for_remote_code_is_refused(tmp_path: Path) -> None:
    model = _fake_model(tmp_path / "model")
    auto_map = {"auto_map": {"AutoTokenizer": ["tok.EvilTokenizer", None]}}
    (model / "tokenizer_config.json").write_text(json.dumps(auto_map))

    with pytest.raises(SnapshotRefused, match=r"tokenizer_config\.json: 'auto_map'"):
        inspect_snapshot(model)


def test_a_run_directory_is_refused_naming_its_newest_checkpoint(tmp_path: Path) -> None:
    for step in (9, 10):
        _fake_model(tmp_path / f"checkpoint-{step}")

    with pytest.raises(SnapshotRefused, match=r"run directory.*checkpoint-10\)"):
        inspect_snapshot(tmp_path)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d.mkdir(), "no config.json or adapter_config.json"),
        (lambda d: _fake_model(d, {}), r"missing: model\.safetensors"),
        (lambda d: d.write_text("x"), "not a directory"),
    ],
    ids=["empty-dir", "no-weights", "a-file"],
)
def test_what_is_not_a_snapshot_is_refused(
    tmp_path: Path, make: Callable[[Path], object], expected: str
) -> None:
    target = tmp_path / "snapshot"
    make(target)

    with pytest.raises(SnapshotRefused, match=expected):
        inspect_snapshot(target)


def test_an_unreadable_config_is_refused(tmp_path: Path) -> None:
    model = _fake_model(tmp_path / "model")
    (model / "config.json").write_text("{not json")

    with pytest.raises(SnapshotRefused, match=r"config\.json: unreadable"):
        inspect_snapshot(model)
