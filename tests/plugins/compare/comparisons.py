"""Comparisons built by hand, figure by figure: no model, no torch."""

from __future__ import annotations

from collections.abc import Iterable

from tunewatch.plugins.compare.results import (
    Comparison,
    ItemResult,
    ModelSide,
    Setup,
    SizeFigures,
    SpeedFigures,
)

GIB = 1024**3


def speed(decode: float = 40.0, prefill: float = 1000.0, spread: float = 0.01) -> SpeedFigures:
    """Timings whose (min, max) lie `spread` (relative) around the median."""
    return SpeedFigures(
        prefill_tokens_per_s=prefill,
        prefill_spread=(prefill * (1 - spread), prefill * (1 + spread)),
        decode_tokens_per_s=decode,
        decode_spread=(decode * (1 - spread), decode * (1 + spread)),
        repeats=5,
        warmup=1,
        prompt_tokens=512,
        new_tokens=64,
    )


def side(
    label: str,
    *,
    speed: SpeedFigures | None = None,
    weights_bytes: int = 2 * GIB,
    finite: bool = True,
    accuracy: float | None = None,
    mean_log_likelihood: float | None = None,
    trainer_metrics: dict[str, float] | None = None,
) -> ModelSide:
    return ModelSide(
        label=label,
        path=f"/runs/demo/{label}",
        kind="checkpoint",
        size=SizeFigures(
            weights_bytes=weights_bytes, dir_bytes=weights_bytes + 4096, parameters=494_032_768
        ),
        speed=speed,
        accuracy=accuracy,
        mean_log_likelihood=mean_log_likelihood,
        perplexity=None,
        finite=finite,
        trainer_metrics=trainer_metrics or {},
        step=None,
    )


def setup(test_items: int = 0) -> Setup:
    return Setup(
        device="cuda:0",
        dtype="bfloat16",
        batch_size=8,
        max_new_tokens=64,
        prompts=16,
        repeats=5,
        warmup=1,
        interleaved=True,
        torch_version="2.4.0",
        transformers_version="4.44.2",
        test_file="/data/test.jsonl" if test_items else None,
        test_items=test_items,
    )


def item(
    correct_a: bool,
    correct_b: bool,
    ll_a: float = -1.0,
    ll_b: float = -1.0,
    *,
    number: int = 0,
    output_b: str | None = None,
) -> ItemResult:
    answer = f"answer {number}"
    return ItemResult(
        prompt=f"question {number}?",
        reference=answer,
        output_a=answer if correct_a else f"wrong {number}",
        output_b=output_b if output_b is not None else answer if correct_b else f"off {number}",
        correct_a=correct_a,
        correct_b=correct_b,
        log_likelihood_a=ll_a,
        log_likelihood_b=ll_b,
    )


def paired(
    both: int = 0,
    only_a: int = 0,
    only_b: int = 0,
    neither: int = 0,
    *,
    ll_a: float = -1.0,
    ll_b: float = -1.0,
) -> list[ItemResult]:
    """Items by kind of pair; each gets its own number (and so its own prompt)."""
    kinds: Iterable[tuple[bool, bool]] = (
        [(True, True)] * both
        + [(True, False)] * only_a
        + [(False, True)] * only_b
        + [(False, False)] * neither
    )
    return [item(a, b, ll_a, ll_b, number=i) for i, (a, b) in enumerate(kinds)]


def comparison(
    a: ModelSide | None = None,
    b: ModelSide | None = None,
    items: Iterable[ItemResult] = (),
) -> Comparison:
    items = tuple(items)
    return Comparison(
        a=a or side("checkpoint-400", speed=speed()),
        b=b or side("checkpoint-600", speed=speed()),
        setup=setup(len(items)),
        items=items,
    )
