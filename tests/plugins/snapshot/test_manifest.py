"""The manifest: what the snapshot is, where it came from, and sha256 sums of its weights."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tunewatch.plugins.snapshot.manifest import (
    MANIFEST_NAME,
    Manifest,
    describe_weights,
    read_manifest,
    write_manifest,
)


def sample(files: tuple[str, ...] = ("model.safetensors",)) -> Manifest:
    return Manifest(
        run="run-a",
        step=120,
        metric="eval_loss",
        value=1.25,
        lower_is_better=True,
        created=1_700_000_000.5,
        source="/runs/run-a/checkpoint-120",
        files=files,
        weights=(),
    )


def test_every_weight_format_is_hashed_and_other_files_are_not(tmp_path: Path) -> None:
    contents = {
        "model.safetensors": b"a" * 5_000_000,  # spans several hash chunks
        "pytorch_model.bin": b"b" * 10,
        "optimizer.pt": b"c" * 11,
        "rng_state.pth": b"d" * 12,
        "model-q4.GGUF": b"e" * 13,
        "config.json": b"{}",
    }
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    weights = describe_weights(tmp_path, contents)
    assert {w.path for w in weights} == set(contents) - {"config.json"}
    for weight in weights:
        data = contents[weight.path]
        assert weight.size == len(data)
        assert weight.sha256 == hashlib.sha256(data).hexdigest()


def test_a_written_manifest_reads_back_the_same(tmp_path: Path) -> None:
    manifest = sample()
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    raw = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert raw["format"] == "tunewatch-snapshot"
    assert raw["created"].startswith("2023-11-")


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"format": "something-else", "version": 1}',
        '{"format": "tunewatch-snapshot", "version": 1, "run": "r", "step": "12"}',
    ],
)
def test_anything_but_a_well_formed_tunewatch_manifest_is_rejected(
    tmp_path: Path, text: str
) -> None:
    (tmp_path / MANIFEST_NAME).write_text(text)
    assert read_manifest(tmp_path) is None


def test_a_missing_or_symlinked_manifest_is_rejected(tmp_path: Path) -> None:
    assert read_manifest(tmp_path) is None
    real = tmp_path / "real"
    real.mkdir()
    write_manifest(real, sample())
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / MANIFEST_NAME).symlink_to(real / MANIFEST_NAME)
    assert read_manifest(fake) is None
