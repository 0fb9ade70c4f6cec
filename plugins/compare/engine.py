"""Measure two snapshots on the same prompts: speed, quality on test items, size (torch).

Only this module imports torch and transformers; the daemon runs it in a child process. Both
models are loaded once, timed interleaved (A, B, then B, A, ...) so that drifting clocks and
caches hit both alike, and freed before it returns.
"""

from __future__ import annotations

import gc
import inspect
import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from tunewatch.plugins.compare.results import (
    Comparison,
    ExampleResult,
    ItemResult,
    ModelSide,
    Setup,
    SizeFigures,
    SpeedFigures,
)
from tunewatch.plugins.compare.snapshot_files import (
    SnapshotFiles,
    SnapshotRefused,
    inspect_snapshot,
)
from tunewatch.plugins.compare.test_items import is_correct, read_test_items

__all__ = ["DEFAULT_PROMPTS", "DeviceBusy", "compare_snapshots", "resolve_device"]

Progress = Callable[[str, int, int], None]  # (what, done, total)

# Timed when neither prompts nor a test file are given: plain text any tokenizer handles.
DEFAULT_PROMPTS: tuple[str, ...] = (
    "The history of the printing press begins",
    "Here is a short summary of how vaccines work:",
    "def fibonacci(n):",
    "The three most important things to know about the ocean are",
    "Once upon a time, in a small village by the sea,",
)
# Room for activations, the KV cache and allocator slack on top of the weights themselves.
ACTIVATION_SHARE = 0.25


class DeviceBusy(Exception):
    """The GPU has too little free memory now and the configuration says to defer, not use CPU."""


def resolve_device(
    requested: str,
    needed_bytes: int,
    margin_bytes: int,
    when_short: Literal["cpu", "defer"],
) -> str:
    """The torch device to compare on: "cpu" or "cuda:N".

    "auto" takes the GPU only when `needed_bytes + margin_bytes` are free on it now (a training
    run may be using the rest; a comparison must never make it run out of memory); otherwise
    "cpu", or DeviceBusy when `when_short` is "defer". An explicit "cuda" is checked the same way
    but never silently moved to the CPU.
    """
    if requested == "cpu":
        return "cpu"
    if requested != "auto" and not requested.startswith("cuda"):
        raise ValueError(f"device {requested!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        if requested == "auto":
            return "cpu"
        raise ValueError(f"device {requested!r}: torch sees no CUDA GPU; use 'auto' or 'cpu'")
    device = torch.device("cuda:0" if requested == "auto" else requested)
    index = device.index if device.index is not None else torch.cuda.current_device()
    free, _total = torch.cuda.mem_get_info(index)
    if free >= needed_bytes + margin_bytes:
        return f"cuda:{index}"
    short = (
        f"cuda:{index} has {free / 2**30:.1f} GiB free; the comparison needs "
        f"{needed_bytes / 2**30:.1f} GiB plus a {margin_bytes / 2**30:.1f} GiB margin"
    )
    if requested == "auto" and when_short == "cpu":
        return "cpu"
    if requested == "auto":
        raise DeviceBusy(f"{short}; deferred until it is free (when_short = 'cpu' runs on CPU)")
    raise DeviceBusy(f"{short}; free GPU memory, or use device 'auto' or 'cpu'")


@dataclass(frozen=True, slots=True)
class _Loaded:
    """One snapshot, loaded: dropping the last reference frees the model."""

    files: SnapshotFiles
    model: Any  # a PreTrainedModel, or a PeftModel around one
    tokenizer: Any
    weights_finite: bool


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to run on both sides."""

    batch: tuple[str, ...]  # the prompts timed together, also the batch size of answering
    new_tokens: int
    repeats: int
    warmup: int
    items: tuple[tuple[str, str], ...]  # (prompt, reference)
    example_prompts: tuple[str, ...]  # answered side by side when there are no items


@dataclass(frozen=True, slots=True)
class _Timing:
    prefill_s: float
    generate_s: float
    prompt_tokens: int
    new_tokens: int


def compare_snapshots(
    a: Path,
    b: Path,
    *,
    test_file: Path | None,
    device: str = "auto",
    max_new_tokens: int = 32,
    repeats: int = 5,
    warmup: int = 1,
    batch_size: int = 1,
    prompts: Sequence[str] | None = None,
    examples: int = 5,
    margin_bytes: int = 2 << 30,
    when_short: str = "cpu",
    progress: Progress | None = None,
    dtype: str = "auto",
) -> Comparison:
    """Compare snapshot B against A; significance and recommendation are left to the caller.

    Speed is timed on one batch of `batch_size` prompts: `prompts`, else the test items',
    else DEFAULT_PROMPTS. With a test file every item is answered by both and `items` holds
    them, judged; without one, the first `examples` of those prompts are answered side by side
    (`examples`, unjudged). `dtype` "auto" is float32 on CPU and bfloat16 (float16 where
    unsupported) on a GPU.
    Raises SnapshotRefused (before anything is loaded) for a snapshot that cannot be compared
    safely, UnreadableInput for a test file without items, DeviceBusy when deferring.
    """
    if max_new_tokens < 2 or repeats < 1 or warmup < 0 or batch_size < 1:
        raise ValueError("max_new_tokens >= 2, repeats >= 1, warmup >= 0 and batch_size >= 1")
    if when_short not in ("cpu", "defer"):
        raise ValueError(f"when_short {when_short!r}: use 'cpu' or 'defer'")
    when: Literal["cpu", "defer"] = "defer" if when_short == "defer" else "cpu"
    files = (inspect_snapshot(a), inspect_snapshot(b))
    items = tuple(read_test_items(test_file)) if test_file is not None else ()
    on_device = resolve_device(device, _needed_bytes(files), margin_bytes, when)
    torch_dtype = _torch_dtype(dtype, on_device)
    source = list(prompts or [prompt for prompt, _ in items] or DEFAULT_PROMPTS)
    plan = _Plan(
        # One fixed batch, the same for both, timed on every repeat.
        batch=tuple(source[i % len(source)] for i in range(batch_size)),
        new_tokens=max_new_tokens,
        repeats=repeats,
        warmup=warmup,
        items=items,
        example_prompts=() if items else tuple(source[:examples]),
    )
    report = progress or _no_progress
    sides: list[_Loaded] = []
    try:
        for done, snapshot in enumerate(files):
            report("loading models", done, len(files))
            sides.append(_load(snapshot, on_device, torch_dtype))
        report("loading models", len(files), len(files))
        with torch.inference_mode():
            measured, paired, shown = _measure(sides, plan, report)
    finally:
        sides.clear()  # the only references: the models go with them
        _release_memory(on_device)
    setup = Setup(
        device=on_device,
        dtype=str(torch_dtype).removeprefix("torch."),
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        prompts=len(plan.batch),
        repeats=repeats,
        warmup=warmup,
        interleaved=True,
        torch_version=torch.__version__,
        transformers_version=transformers.__version__,
        test_file=None if test_file is None else str(test_file),
        test_items=len(items),
    )
    return Comparison(a=measured[0], b=measured[1], setup=setup, items=paired, examples=shown)


def _measure(
    sides: Sequence[_Loaded], plan: _Plan, report: Progress
) -> tuple[list[ModelSide], tuple[ItemResult, ...], tuple[ExampleResult, ...]]:
    """Both sides' figures, the judged test items, and the unjudged examples (no test file)."""
    speeds = _time_interleaved(sides, plan, report)
    measured = [
        _model_side(side, speed, _outputs_finite(side, plan.batch))
        for side, speed in zip(sides, speeds, strict=True)
    ]
    if not plan.items:
        return measured, (), _examples(sides, plan, report)
    a, b = (_answer(side, plan, report) for side in sides)
    paired = _paired_items(plan.items, a, b)
    measured = [
        _with_quality(measured[0], a, [item.correct_a for item in paired]),
        _with_quality(measured[1], b, [item.correct_b for item in paired]),
    ]
    return measured, paired, ()


def _no_progress(what: str, done: int, total: int) -> None:
    return None


def _needed_bytes(files: Sequence[SnapshotFiles]) -> int:
    # Weights as stored: a bfloat16 copy of float32 weights is smaller, so this never undercounts.
    stored = sum(f.weights_bytes + (f.base.weights_bytes if f.base else 0) for f in files)
    return int(stored * (1 + ACTIVATION_SHARE))


def _torch_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        if device == "cpu":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    chosen = getattr(torch, dtype, None)
    if not isinstance(chosen, torch.dtype) or not chosen.is_floating_point:
        raise ValueError(f"dtype {dtype!r}: use 'auto', 'float32', 'bfloat16' or 'float16'")
    return chosen


# Loading


def _load(files: SnapshotFiles, device: str, dtype: torch.dtype) -> _Loaded:
    """Model and tokenizer of one snapshot: safetensors only, local files only, no remote code."""
    if files.tokenizer_dir is None:
        raise SnapshotRefused(
            f"{files.path}: no tokenizer files here (or in the run directory or base model); "
            f"save one next to the weights: tokenizer.save_pretrained('{files.path}')"
        )
    # The caller shows its own progress; transformers leaves this unannotated.
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    tokenizer = AutoTokenizer.from_pretrained(
        str(files.tokenizer_dir), trust_remote_code=False, local_files_only=True
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # in memory only, to pad a batch
    tokenizer.padding_side = "left"  # decoder-only models generate after the last real token
    model = _load_model(files, device, dtype)
    model.eval()
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    return _Loaded(files, model, tokenizer, finite)


def _from_pretrained(path: Path, device: str, dtype: torch.dtype) -> Any:
    return AutoModelForCausalLM.from_pretrained(
        str(path),
        dtype=dtype,
        device_map=device,
        use_safetensors=True,
        trust_remote_code=False,
        local_files_only=True,
    )


def _load_model(files: SnapshotFiles, device: str, dtype: torch.dtype) -> Any:
    if files.base is None:
        return _from_pretrained(files.path, device, dtype)
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise SnapshotRefused(
            f"{files.path} is a PEFT adapter and peft is not installed: "
            'pip install "tunewatch[compare]" (or pip install peft)'
        ) from exc
    base = _from_pretrained(files.base.path, device, dtype)
    with warnings.catch_warnings():
        # peft 0.21 reads an attribute transformers 5 deprecated; nothing a user can act on.
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
        return PeftModel.from_pretrained(base, str(files.path), is_trainable=False)


def _encode(side: _Loaded, texts: Sequence[str]) -> Any:
    """A left-padded batch on the model's device."""
    return side.tokenizer(list(texts), return_tensors="pt", padding=True).to(side.model.device)


def _release_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


# Speed


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generation_config(side: _Loaded, new_tokens: int, *, fixed_length: bool) -> GenerationConfig:
    """Greedy; with `fixed_length` every sequence gets exactly `new_tokens` (EOS suppressed)."""
    eos = side.model.generation_config.eos_token_id
    return GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens if fixed_length else None,
        do_sample=False,
        pad_token_id=side.tokenizer.pad_token_id,
        eos_token_id=side.tokenizer.eos_token_id if eos is None else eos,
    )


def _keeps_last_logits(model: Any) -> bool:
    """Whether the model can compute only the last positions' logits (`logits_to_keep`), as
    generate does: the whole prompt's logits over a large vocabulary would dwarf the rest."""
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(core.forward).parameters


def _time_once(side: _Loaded, encoded: Any, config: GenerationConfig) -> _Timing:
    """One prefill forward (time to first token), then one whole fixed-length generate."""
    device = side.model.device
    kwargs = {"logits_to_keep": 1} if _keeps_last_logits(side.model) else {}
    _synchronize(device)
    start = time.perf_counter()
    side.model(**encoded, use_cache=True, **kwargs)
    _synchronize(device)
    prefill_s = time.perf_counter() - start
    start = time.perf_counter()
    generated = side.model.generate(**encoded, generation_config=config)
    _synchronize(device)
    generate_s = time.perf_counter() - start
    return _Timing(
        prefill_s=prefill_s,
        generate_s=generate_s,
        prompt_tokens=int(encoded["attention_mask"].sum()),
        new_tokens=int(generated.shape[1] - encoded["input_ids"].shape[1]),
    )


def _time_interleaved(
    sides: Sequence[_Loaded], plan: _Plan, report: Progress
) -> list[SpeedFigures]:
    encoded = [_encode(side, plan.batch) for side in sides]
    configs = [_generation_config(side, plan.new_tokens, fixed_length=True) for side in sides]
    for _ in range(plan.warmup):
        for i, side in enumerate(sides):
            _time_once(side, encoded[i], configs[i])
    timings: list[list[_Timing]] = [[] for _ in sides]
    for repeat in range(plan.repeats):
        report("timing", repeat, plan.repeats)
        # A then B, then B then A: neither always runs on a cache the other just warmed.
        order = range(len(sides)) if repeat % 2 == 0 else reversed(range(len(sides)))
        for i in order:
            timings[i].append(_time_once(sides[i], encoded[i], configs[i]))
    report("timing", plan.repeats, plan.repeats)
    return [_speed_figures(runs, len(plan.batch), plan.warmup) for runs in timings]


def _speed_figures(runs: Sequence[_Timing], batch_size: int, warmup: int) -> SpeedFigures:
    """Tokens/s: prefill over the real prompt tokens; decode over the tokens after the first.

    The prefill forward already yields the first new token, so the decode phase (generate
    minus prefill) produces new_tokens - 1 per sequence.
    """
    prefill = [run.prompt_tokens / run.prefill_s for run in runs]
    decode = [
        batch_size * (run.new_tokens - 1) / max(run.generate_s - run.prefill_s, 1e-9)
        for run in runs
    ]
    generate = [batch_size * run.new_tokens / run.generate_s for run in runs]
    return SpeedFigures(
        prefill_tokens_per_s=statistics.median(prefill),
        prefill_spread=(min(prefill), max(prefill)),
        decode_tokens_per_s=statistics.median(decode),
        decode_spread=(min(decode), max(decode)),
        repeats=len(runs),
        warmup=warmup,
        prompt_tokens=runs[0].prompt_tokens,
        new_tokens=runs[0].new_tokens,
        generate_tokens_per_s=statistics.median(generate),
    )


# Quality


@dataclass(frozen=True, slots=True)
class _Answers:
    """One snapshot's answers to the test items."""

    outputs: list[str]
    log_likelihoods: list[float]  # per item: mean per reference token
    mean_log_likelihood: float  # per reference token, over all items


def _generate_texts(side: _Loaded, prompts: Sequence[str], plan: _Plan) -> Iterator[str]:
    """Greedy answers, stopping at EOS, in batches of the timed batch's size."""
    config = _generation_config(side, plan.new_tokens, fixed_length=False)
    batch_size = len(plan.batch)
    for start in range(0, len(prompts), batch_size):
        encoded = _encode(side, prompts[start : start + batch_size])
        generated = side.model.generate(**encoded, generation_config=config)
        new = generated[:, encoded["input_ids"].shape[1] :]
        yield from side.tokenizer.batch_decode(new, skip_special_tokens=True)


def _reference_log_probs(side: _Loaded, prompt: str, reference: str) -> torch.Tensor:
    """Log-probabilities of the reference's tokens following the prompt (teacher forcing).

    The reference is joined to the prompt by one space unless the prompt already ends in
    whitespace, the way an answer follows a question in plain text.
    """
    joiner = "" if prompt[-1:].isspace() else " "
    prompt_ids = side.tokenizer(prompt)["input_ids"]
    reference_ids = side.tokenizer(joiner + reference, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + reference_ids], device=side.model.device)
    # Only the positions that predict reference tokens: bounded memory with a large vocabulary.
    keep = len(reference_ids) + 1
    kwargs = {"logits_to_keep": keep} if _keeps_last_logits(side.model) else {}
    logits = side.model(input_ids=ids, **kwargs).logits[0, -len(reference_ids) - 1 : -1]
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    targets = torch.tensor(reference_ids, device=log_probs.device)
    return log_probs.gather(1, targets[:, None])[:, 0]


def _answer(side: _Loaded, plan: _Plan, report: Progress) -> _Answers:
    items = plan.items
    what = f"test items ({side.files.label})"
    report(what, 0, len(items))
    outputs = list(_generate_texts(side, [prompt for prompt, _ in items], plan))
    per_item: list[float] = []
    total, count = 0.0, 0
    for done, (prompt, reference) in enumerate(items, 1):
        log_probs = _reference_log_probs(side, prompt, reference)
        per_item.append(float(log_probs.mean()))
        total += float(log_probs.sum())
        count += log_probs.numel()
        report(what, done, len(items))
    return _Answers(outputs, per_item, total / max(count, 1))


def _paired_items(
    items: Sequence[tuple[str, str]], a: _Answers, b: _Answers
) -> tuple[ItemResult, ...]:
    return tuple(
        ItemResult(
            prompt=prompt,
            reference=reference,
            output_a=a.outputs[n],
            output_b=b.outputs[n],
            correct_a=is_correct(a.outputs[n], reference),
            correct_b=is_correct(b.outputs[n], reference),
            log_likelihood_a=a.log_likelihoods[n],
            log_likelihood_b=b.log_likelihoods[n],
        )
        for n, (prompt, reference) in enumerate(items)
    )


def _examples(sides: Sequence[_Loaded], plan: _Plan, report: Progress) -> tuple[ExampleResult, ...]:
    prompts = plan.example_prompts
    report("examples", 0, len(sides))
    a, b = (list(_generate_texts(side, prompts, plan)) for side in sides)
    report("examples", len(sides), len(sides))
    return tuple(ExampleResult(*texts) for texts in zip(prompts, a, b, strict=True))


def _outputs_finite(side: _Loaded, batch: Sequence[str]) -> bool:
    # NaN/Inf anywhere in the network reaches the last position's logits.
    kwargs = {"logits_to_keep": 1} if _keeps_last_logits(side.model) else {}
    logits = side.model(**_encode(side, batch), **kwargs).logits
    return bool(torch.isfinite(logits).all())


# Results


def _model_side(side: _Loaded, speed: SpeedFigures, outputs_finite: bool) -> ModelSide:
    files = side.files
    parameters = sum(p.numel() for p in side.model.parameters())
    return ModelSide(
        label=files.label,
        path=str(files.path),
        kind=files.kind,
        size=SizeFigures(
            weights_bytes=files.weights_bytes,
            dir_bytes=files.dir_bytes,
            parameters=parameters,
            trainable_parameters=_adapter_parameters(side.model) if files.base else None,
        ),
        speed=speed,
        finite=side.weights_finite and outputs_finite,
    )


def _adapter_parameters(model: Any) -> int:
    """The adapter's own parameters: PEFT names them after the adapter ("lora_A.default")."""
    name = getattr(model, "active_adapter", "default")
    return sum(p.numel() for n, p in model.named_parameters() if f".{name}." in f".{n}.")


def _with_quality(side: ModelSide, answers: _Answers, correct: Sequence[bool]) -> ModelSide:
    mean_ll = answers.mean_log_likelihood
    return replace(
        side,
        accuracy=sum(correct) / len(correct),
        mean_log_likelihood=mean_ll,
        # exp overflows past ~709: such a perplexity is infinite for any reader.
        perplexity=math.exp(min(-mean_ll, 709.0)) if not math.isnan(mean_ll) else math.nan,
        finite=side.finite and math.isfinite(mean_ll),
    )
