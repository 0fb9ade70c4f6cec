"""What a comparison of two snapshots found: plain frozen dataclasses, JSON in and out.

The engine (torch, in a child process) fills them; significance, the recommendation and the
renderers read them. Nothing here imports torch, so the daemon can read a result back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SnapshotKind = Literal["model", "checkpoint", "peft_adapter"]
Verdict = Literal["better", "worse", "no significant difference"]
Side = Literal["a", "b"]


@dataclass(frozen=True, slots=True)
class SpeedFigures:
    """Tokens per second over `repeats` timed runs (after `warmup` untimed ones)."""

    prefill_tokens_per_s: float  # median
    prefill_spread: tuple[float, float]  # (min, max) over the repeats
    decode_tokens_per_s: float  # median
    decode_spread: tuple[float, float]
    repeats: int
    warmup: int
    prompt_tokens: int  # per batch, padding excluded
    new_tokens: int  # per sequence (min_new_tokens = max_new_tokens)
    # Whole generate calls (prefill included): what a bare `model.generate` timing loop reports.
    generate_tokens_per_s: float | None = None


@dataclass(frozen=True, slots=True)
class SizeFigures:
    weights_bytes: int  # the weight files only (*.safetensors)
    dir_bytes: int  # every file of the snapshot directory
    parameters: int  # counted on the loaded model (adapter + base for a PEFT adapter)
    trainable_parameters: int | None = None  # a PEFT adapter's own parameters


@dataclass(frozen=True, slots=True)
class ModelSide:
    """One of the two snapshots."""

    label: str  # what a person calls it: the directory name ("checkpoint-600")
    path: str
    kind: SnapshotKind
    size: SizeFigures
    speed: SpeedFigures | None = None
    accuracy: float | None = None  # fraction of test items answered right
    mean_log_likelihood: float | None = None  # per reference token, natural log
    perplexity: float | None = None  # exp(-mean_log_likelihood)
    # False when the weights or the outputs hold NaN/Inf: such a snapshot is never recommended.
    finite: bool = True
    # The eval metrics the trainer logged at this snapshot's step (from the store), shown
    # labelled as such when there is no test file.
    trainer_metrics: dict[str, float] = field(default_factory=dict)
    step: int | None = None


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One test item, answered by both snapshots (paired)."""

    prompt: str
    reference: str
    output_a: str
    output_b: str
    correct_a: bool
    correct_b: bool
    log_likelihood_a: float  # mean per reference token
    log_likelihood_b: float


@dataclass(frozen=True, slots=True)
class ExampleResult:
    """One example prompt without a reference (no test file): both outputs, nothing judged."""

    prompt: str
    output_a: str
    output_b: str


@dataclass(frozen=True, slots=True)
class Significance:
    """B against A on the same items. Differences are B minus A."""

    n: int
    accuracy_difference: float
    accuracy_ci: tuple[float, float]  # paired bootstrap, `confidence`
    mcnemar_p: float  # exact (binomial) two-sided
    only_a_right: int  # items A got right and B wrong
    only_b_right: int
    log_likelihood_difference: float
    log_likelihood_ci: tuple[float, float]
    confidence: float  # e.g. 0.95
    verdict: Verdict  # of B against A
    summary: str  # "better: +5.0 % accuracy, p=0.03" / "no significant difference (n=20)"


@dataclass(frozen=True, slots=True)
class Setup:
    """How the figures were taken; printed with them so that two reports can be compared."""

    device: str  # "cpu", "cuda:0"
    dtype: str  # "float32", "bfloat16"
    batch_size: int
    max_new_tokens: int
    prompts: int  # prompts timed for speed
    repeats: int
    warmup: int
    interleaved: bool  # A and B alternated on each repeat
    torch_version: str
    transformers_version: str
    test_file: str | None
    test_items: int  # 0 without a test file


@dataclass(frozen=True, slots=True)
class Recommendation:
    choice: Side | None  # None: neither can be recommended (both diverged)
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Comparison:
    a: ModelSide
    b: ModelSide
    setup: Setup
    items: tuple[ItemResult, ...] = ()
    significance: Significance | None = None
    recommendation: Recommendation | None = None
    # Side-by-side outputs when there is no test file (with one, `items` holds them, judged).
    # Kept apart from `items` so that significance is never computed on unjudged outputs.
    examples: tuple[ExampleResult, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Comparison:
        def side(d: dict[str, Any]) -> ModelSide:
            speed = d.get("speed")
            return ModelSide(
                **{
                    **d,
                    "size": SizeFigures(**d["size"]),
                    "speed": None if speed is None else _speed(speed),
                    "trainer_metrics": dict(d.get("trainer_metrics") or {}),
                }
            )

        sig = data.get("significance")
        rec = data.get("recommendation")
        return cls(
            a=side(data["a"]),
            b=side(data["b"]),
            setup=Setup(**data["setup"]),
            items=tuple(ItemResult(**item) for item in data.get("items", ())),
            significance=None if sig is None else _significance(sig),
            recommendation=None
            if rec is None
            else Recommendation(rec["choice"], tuple(rec["reasons"])),
            examples=tuple(ExampleResult(**example) for example in data.get("examples", ())),
        )


def _speed(d: dict[str, Any]) -> SpeedFigures:
    return SpeedFigures(
        **{
            **d,
            "prefill_spread": tuple(d["prefill_spread"]),
            "decode_spread": tuple(d["decode_spread"]),
        }
    )


def _significance(d: dict[str, Any]) -> Significance:
    return Significance(
        **{
            **d,
            "accuracy_ci": tuple(d["accuracy_ci"]),
            "log_likelihood_ci": tuple(d["log_likelihood_ci"]),
        }
    )
