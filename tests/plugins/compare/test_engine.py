"""Specification of the comparison engine, on tiny snapshots whose true ranking is known."""

from __future__ import annotations

import gc
import json
import math
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fixtures.tiny_models import (
    FINAL_STEP,
    TEST_ITEMS,
    TinySnapshots,
    arm_trainer_pickles,
    make_pickle_only_snapshot,
    make_remote_code_snapshot,
)
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from tunewatch.plugins.compare import engine
from tunewatch.plugins.compare.engine import DeviceBusy, compare_snapshots, resolve_device
from tunewatch.plugins.compare.results import Comparison
from tunewatch.plugins.compare.snapshot_files import SnapshotRefused
from tunewatch.plugins.compare.test_items import is_correct

NEW_TOKENS = 8
REPEATS = 3
GIB = 1 << 30


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Figures are not asserted on here, and two OpenMP threads on a busy 2-core runner can
    # stall a tiny forward for seconds.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def early_vs_final(tiny_snapshots: TinySnapshots) -> Comparison:
    return compare_snapshots(
        tiny_snapshots.early_checkpoint,
        tiny_snapshots.final_checkpoint,
        test_file=tiny_snapshots.test_file,
        device="cpu",
        max_new_tokens=NEW_TOKENS,
        repeats=REPEATS,
        batch_size=4,
    )


@pytest.fixture(scope="module")
def model_vs_adapter(tiny_snapshots: TinySnapshots, lora_adapter: Path) -> Comparison:
    return compare_snapshots(
        tiny_snapshots.final_model,
        lora_adapter,
        test_file=None,
        device="cpu",
        max_new_tokens=NEW_TOKENS,
        repeats=2,
        batch_size=2,
        examples=3,
    )


def _quick_compare(a: Path, b: Path, **overrides: Any) -> Comparison:
    """A comparison that is over in a moment: for tests about what happens, not the figures."""
    settings: dict[str, Any] = {
        "test_file": None,
        "device": "cpu",
        "max_new_tokens": 2,
        "repeats": 1,
        "examples": 1,
    }
    return compare_snapshots(a, b, **{**settings, **overrides})


def test_the_trained_snapshot_wins_on_held_out_items(early_vs_final: Comparison) -> None:
    a, b = early_vs_final.a, early_vs_final.b

    assert a.accuracy is not None and b.accuracy is not None
    assert b.accuracy >= 0.9
    assert a.accuracy <= 0.2
    assert a.mean_log_likelihood is not None and b.mean_log_likelihood is not None
    assert b.mean_log_likelihood > a.mean_log_likelihood + 1.0
    assert b.perplexity == pytest.approx(math.exp(-b.mean_log_likelihood))
    assert a.perplexity is not None and b.perplexity is not None
    assert a.perplexity > b.perplexity


def test_every_test_item_is_answered_by_both_and_judged(
    early_vs_final: Comparison, tiny_snapshots: TinySnapshots
) -> None:
    rows = [json.loads(line) for line in tiny_snapshots.test_file.read_text().splitlines()]
    items = early_vs_final.items

    assert [(i.prompt, i.reference) for i in items] == [
        (row["prompt"], row["completion"]) for row in rows
    ]
    assert len(items) == TEST_ITEMS == early_vs_final.setup.test_items
    for item in items:
        assert item.correct_a == is_correct(item.output_a, item.reference)
        assert item.correct_b == is_correct(item.output_b, item.reference)
    b_right = [item.correct_b for item in items]
    assert early_vs_final.b.accuracy == sum(b_right) / len(b_right)
    assert early_vs_final.examples == ()  # the judged items are the side-by-side examples


def test_answers_stop_at_eos_but_timed_generation_has_a_fixed_length(
    early_vs_final: Comparison,
) -> None:
    # The trained model answers " 439" and stops; timing still generates NEW_TOKENS every time.
    assert all(len(item.output_b) < NEW_TOKENS for item in early_vs_final.items)
    for side in (early_vs_final.a, early_vs_final.b):
        assert side.speed is not None
        assert side.speed.new_tokens == NEW_TOKENS


def test_speed_is_a_median_with_its_spread_for_prefill_and_decode_separately(
    early_vs_final: Comparison,
) -> None:
    for side in (early_vs_final.a, early_vs_final.b):
        speed = side.speed
        assert speed is not None
        assert speed.repeats == REPEATS and speed.warmup == 1
        low, high = speed.prefill_spread
        assert 0 < low <= speed.prefill_tokens_per_s <= high
        low, high = speed.decode_spread
        assert 0 < low <= speed.decode_tokens_per_s <= high
        assert speed.generate_tokens_per_s is not None and speed.generate_tokens_per_s > 0
        # Four prompts "<s>Q: 439? A:" of 11 tokens each, no padding among equal lengths.
        assert speed.prompt_tokens == 4 * 11


def test_setup_states_how_the_figures_were_taken(
    early_vs_final: Comparison, tiny_snapshots: TinySnapshots
) -> None:
    setup = early_vs_final.setup

    assert (setup.device, setup.dtype, setup.batch_size) == ("cpu", "float32", 4)
    assert (setup.max_new_tokens, setup.repeats, setup.warmup) == (NEW_TOKENS, REPEATS, 1)
    assert setup.prompts == 4 and setup.interleaved
    assert setup.torch_version == torch.__version__
    assert setup.test_file == str(tiny_snapshots.test_file)


def test_size_and_identity_of_each_snapshot(
    early_vs_final: Comparison, tiny_snapshots: TinySnapshots
) -> None:
    b = early_vs_final.b
    weights = tiny_snapshots.final_checkpoint / "model.safetensors"

    assert (b.label, b.kind, b.path) == (
        f"checkpoint-{FINAL_STEP}",
        "checkpoint",
        str(tiny_snapshots.final_checkpoint),
    )
    assert b.size.weights_bytes == weights.stat().st_size
    assert b.size.dir_bytes > b.size.weights_bytes  # optimizer state and the rest
    assert b.size.parameters == 123_200
    assert b.size.trainable_parameters is None
    assert b.finite and early_vs_final.a.finite


def test_significance_and_recommendation_are_left_to_the_caller(
    early_vs_final: Comparison,
) -> None:
    assert early_vs_final.significance is None
    assert early_vs_final.recommendation is None


def test_the_comparison_survives_json(early_vs_final: Comparison) -> None:
    text = json.dumps(early_vs_final.to_json())

    assert Comparison.from_json(json.loads(text)) == early_vs_final


def test_a_lora_adapter_is_compared_with_its_base_and_counted_apart(
    model_vs_adapter: Comparison,
) -> None:
    base, adapter = model_vs_adapter.a, model_vs_adapter.b
    # r=4 LoRA on q_proj and v_proj (64 -> 64) in 2 layers: 2 * 2 * (4 * 64 + 64 * 4).
    lora_parameters = 2 * 2 * (4 * 64 + 64 * 4)

    assert (base.kind, adapter.kind) == ("model", "peft_adapter")
    assert adapter.size.trainable_parameters == lora_parameters
    assert adapter.size.parameters == base.size.parameters + lora_parameters
    assert adapter.size.weights_bytes < base.size.weights_bytes  # the adapter file only


def test_without_a_test_file_there_are_examples_but_no_judged_items(
    model_vs_adapter: Comparison,
) -> None:
    assert model_vs_adapter.items == ()
    assert model_vs_adapter.setup.test_items == 0
    assert model_vs_adapter.a.accuracy is None and model_vs_adapter.a.mean_log_likelihood is None
    assert [e.prompt for e in model_vs_adapter.examples] == list(engine.DEFAULT_PROMPTS[:3])
    # Random LoRA weights change what the model says.
    assert any(e.output_a != e.output_b for e in model_vs_adapter.examples)
    assert model_vs_adapter.a.speed is not None and model_vs_adapter.b.speed is not None


def test_a_and_b_are_timed_interleaved_in_alternating_order(
    tiny_snapshots: TinySnapshots, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    timed = engine._time_once

    def recording(side: engine._Loaded, *args: object) -> engine._Timing:
        order.append("A" if side.files.path == tiny_snapshots.early_checkpoint else "B")
        return timed(side, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_time_once", recording)
    _quick_compare(tiny_snapshots.early_checkpoint, tiny_snapshots.final_model, repeats=4)

    assert "".join(order) == "AB" + "AB" + "BA" + "AB" + "BA"  # warm-up, then the repeats


def test_a_snapshot_with_nan_weights_is_not_finite(
    tiny_snapshots: TinySnapshots, tmp_path: Path
) -> None:
    diverged = tmp_path / "checkpoint-999"
    shutil.copytree(tiny_snapshots.final_checkpoint, diverged)
    tensors = load_file(diverged / "model.safetensors")
    tensors["model.norm.weight"][0] = math.nan
    save_file(tensors, diverged / "model.safetensors", metadata={"format": "pt"})

    result = _quick_compare(tiny_snapshots.final_checkpoint, diverged)

    assert result.a.finite
    assert not result.b.finite


def test_a_malicious_pickle_only_snapshot_is_refused_before_anything_loads(
    tiny_snapshots: TinySnapshots, tmp_path: Path, opened_files: list[str]
) -> None:
    marker = tmp_path / "pwned"
    snapshot = make_pickle_only_snapshot(tiny_snapshots.final_model, tmp_path / "evil", marker)
    opened_files.clear()

    with pytest.raises(SnapshotRefused, match="only pickle weights"):
        compare_snapshots(tiny_snapshots.early_checkpoint, snapshot, test_file=None, device="cpu")

    assert not marker.exists()
    assert not [p for p in opened_files if p.endswith((".bin", ".safetensors"))]


def test_trainer_pickles_next_to_the_weights_are_never_loaded(
    tiny_snapshots: TinySnapshots, tmp_path: Path, opened_files: list[str]
) -> None:
    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "checkpoint-100"
    shutil.copytree(tiny_snapshots.early_checkpoint, checkpoint)
    arm_trainer_pickles(checkpoint, marker)
    opened_files.clear()

    _quick_compare(checkpoint, tiny_snapshots.final_model)

    assert not marker.exists()
    assert not [p for p in opened_files if p.endswith((".bin", ".pt", ".pth"))]


def test_a_config_asking_for_remote_code_is_refused(
    tiny_snapshots: TinySnapshots, tmp_path: Path
) -> None:
    custom = make_remote_code_snapshot(tiny_snapshots.final_model, tmp_path / "custom")

    with pytest.raises(SnapshotRefused, match="trust_remote_code"):
        compare_snapshots(custom, tiny_snapshots.final_model, test_file=None, device="cpu")


def test_an_adapter_without_peft_installed_is_refused_saying_what_to_install(
    tiny_snapshots: TinySnapshots, lora_adapter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError

    with pytest.raises(SnapshotRefused, match=r"peft is not installed.*pip install"):
        compare_snapshots(tiny_snapshots.final_model, lora_adapter, test_file=None, device="cpu")


def test_models_are_freed_when_the_comparison_returns(tiny_snapshots: TinySnapshots) -> None:
    def live_models() -> int:
        gc.collect()
        # type(), not isinstance: some objects warn when their __class__ is read.
        return sum(issubclass(type(o), PreTrainedModel) for o in gc.get_objects())

    before = live_models()
    _quick_compare(tiny_snapshots.early_checkpoint, tiny_snapshots.final_model)

    assert live_models() == before


def test_nonsense_settings_are_rejected_before_loading(tiny_snapshots: TinySnapshots) -> None:
    snapshot = tiny_snapshots.final_model
    with pytest.raises(ValueError, match="max_new_tokens >= 2"):
        compare_snapshots(snapshot, snapshot, test_file=None, max_new_tokens=1)
    with pytest.raises(ValueError, match="when_short"):
        compare_snapshots(snapshot, snapshot, test_file=None, when_short="later")


# Device choice, with the GPU's free memory faked: no GPU is needed to test the policy.


@pytest.fixture
def gpu_with_free(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """A fake CUDA GPU whose free memory is the list's first element (total 80 GiB)."""
    free = [0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=0: (free[0], 80 * GIB))
    yield free


def test_auto_uses_the_gpu_when_the_model_and_the_margin_fit(gpu_with_free: list[int]) -> None:
    gpu_with_free[0] = 10 * GIB

    assert resolve_device("auto", 7 * GIB, 2 * GIB, "cpu") == "cuda:0"


@pytest.mark.parametrize("requested", ["auto", "cpu"])
def test_auto_falls_back_to_cpu_when_the_gpu_is_short(
    gpu_with_free: list[int], requested: str
) -> None:
    gpu_with_free[0] = 8 * GIB  # 7 needed + 2 margin do not fit

    assert resolve_device(requested, 7 * GIB, 2 * GIB, "cpu") == "cpu"


def test_auto_defers_when_configured_to(gpu_with_free: list[int]) -> None:
    gpu_with_free[0] = 8 * GIB

    with pytest.raises(DeviceBusy, match=r"8\.0 GiB free.*7\.0 GiB plus a 2\.0 GiB margin"):
        resolve_device("auto", 7 * GIB, 2 * GIB, "defer")


def test_an_explicit_gpu_is_never_silently_swapped_for_the_cpu(gpu_with_free: list[int]) -> None:
    gpu_with_free[0] = 1 * GIB

    with pytest.raises(DeviceBusy, match="free GPU memory, or use device 'auto' or 'cpu'"):
        resolve_device("cuda", 7 * GIB, 2 * GIB, "cpu")


def test_without_a_gpu_auto_is_the_cpu_and_cuda_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    assert resolve_device("auto", GIB, GIB, "defer") == "cpu"
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda", GIB, GIB, "cpu")
    with pytest.raises(ValueError, match="use 'auto', 'cpu'"):
        resolve_device("tpu", GIB, GIB, "cpu")


def test_a_deferred_comparison_loads_nothing(
    tiny_snapshots: TinySnapshots, gpu_with_free: list[int], opened_files: list[str]
) -> None:
    gpu_with_free[0] = 0

    with pytest.raises(DeviceBusy):
        compare_snapshots(
            tiny_snapshots.early_checkpoint,
            tiny_snapshots.final_model,
            test_file=None,
            when_short="defer",
        )

    assert not [p for p in opened_files if p.endswith(".safetensors")]
